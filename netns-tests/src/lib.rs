//! netns-tests: a harness that runs real CNI plugin binaries (knit's and the reference
//! containernetworking/plugins) inside throwaway network namespaces, compares what they leave in
//! the kernel, and measures them side by side.
//!
//! - [`topology`]: named test namespaces removed on drop, and commands run inside them.
//! - [`cni`]: a small libcni (conflist chains, prevResult, runtimeConfig, cached DEL).
//! - [`snapshot`]: a namespace's links/addresses/routes/sysctls rendered with random names and MACs
//!   replaced by roles, so two implementations compare equal.
//! - [`reach`]: ping, TCP/UDP probes and listeners inside namespaces.
//! - [`cluster`]: a multi-host knit lab (underlay with etcd, hosts with agents, CNI attach).
//! - [`ping`]: ICMP echo from a ping socket opened inside a namespace.

pub mod cases;
pub mod cluster;
pub mod cni;
pub mod docker;
pub mod etcd;
pub mod knit;
pub mod ping;
pub mod reach;
pub mod scenario;
pub mod snapshot;
pub mod topology;

use std::path::PathBuf;

/// Where the reference plugins live (Debian's containernetworking-plugins).
pub const REFERENCE_CNI_DIR: &str = "/usr/lib/cni";

/// The reference plugin dir: `$REF_CNI_BIN` or `/usr/lib/cni`.
pub fn reference_dir() -> PathBuf {
    std::env::var_os("REF_CNI_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(REFERENCE_CNI_DIR))
}

/// knit's plugin dir: `$KNIT_CNI_BIN` or `<workspace>/target/cni/bin` (what `make build` fills).
pub fn knit_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KNIT_CNI_BIN") {
        return PathBuf::from(dir);
    }
    workspace_root().join("target/cni/bin")
}

/// The workspace root (the parent of this crate's manifest dir).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The `knit` binary under test: `$KNIT_BIN`, else `target/release/knit` (`make build`); an
/// error naming the fix when it is missing.
pub fn knit_bin() -> anyhow::Result<PathBuf> {
    let bin = std::env::var_os("KNIT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/knit"));
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: run `make build` first",
        bin.display()
    );
    Ok(bin)
}

/// Fail (never skip) when not root: the harness needs CAP_SYS_ADMIN and CAP_NET_ADMIN.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "netns-tests need root (run under sudo / as root); they are never skipped"
    );
}

/// Median of a list of durations in milliseconds (NaN when empty).
pub fn median_ms(samples: &[std::time::Duration]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut v: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn median_of_even_and_odd_lists() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        assert_eq!(median_ms(&ms(&[3, 1, 2])), 2.0);
        assert_eq!(median_ms(&ms(&[4, 1, 2, 3])), 2.5);
        assert!(median_ms(&[]).is_nan());
    }
}
