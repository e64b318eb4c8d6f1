//! Where libnet keeps what one attachment's DEL needs from its ADD (nft element records, a
//! host-device's saved name): a value the caller passes in. libnet never reads the
//! environment, so two callers in one process (tests, a daemon serving several runtimes) can
//! use different roots, and no test needs an environment variable.

use std::path::{Path, PathBuf};

use crate::nft::StateDir;

/// Default root: tmpfs, because everything recorded under it describes kernel state that does
/// not outlive a reboot either.
pub const DEFAULT_STATE_ROOT: &str = "/run/cni/knit";

/// The root of knit's state directories; each feature has its own directory below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRoot(PathBuf);

impl StateRoot {
    pub fn new(root: impl Into<PathBuf>) -> StateRoot {
        StateRoot(root.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `<root>/nft`: the nftables layer's element records.
    pub fn nft(&self) -> StateDir {
        StateDir::new(self.0.join("nft"))
    }

    /// `<root>/host-device`: what a lent host device is given back as.
    pub fn host_device(&self) -> PathBuf {
        self.0.join("host-device")
    }
}

impl Default for StateRoot {
    fn default() -> StateRoot {
        StateRoot::new(DEFAULT_STATE_ROOT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_root_and_feature_dirs() {
        let d = StateRoot::default();
        assert_eq!(d.nft().dir(), Path::new(crate::nft::DEFAULT_STATE_DIR));
        assert_eq!(d.host_device(), Path::new("/run/cni/knit/host-device"));
        let t = StateRoot::new("/tmp/knit-x");
        assert_eq!(t.nft().dir(), Path::new("/tmp/knit-x/nft"));
        assert_eq!(t.path(), Path::new("/tmp/knit-x"));
    }
}
