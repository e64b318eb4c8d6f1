//! Sysctls under `/proc/sys`, read and written in the network namespace of the calling thread
//! (`/proc/sys/net` resolves to the opener's namespace, so call these inside `NetNs::run_in`).
//! Keys use the dotted or slashed form: `net.ipv4.ip_forward` or `net/ipv4/ip_forward`.
//! Interface names may contain dots, so callers building keys from names should use the slashed
//! form (`net/ipv4/conf/eth0.100/rp_filter`), as `sysctl -w` itself requires.

use crate::error::{HasKind, Kind};

#[derive(Debug, thiserror::Error)]
#[error("sysctl {op} {key}: {source}")]
pub struct SysctlError {
    pub op: &'static str,
    pub key: String,
    #[source]
    pub source: std::io::Error,
}

impl HasKind for SysctlError {
    fn kind(&self) -> Kind {
        HasKind::kind(&self.source)
    }
}

fn path_of(key: &str) -> String {
    if key.contains('/') {
        format!("/proc/sys/{}", key.trim_start_matches('/'))
    } else {
        format!("/proc/sys/{}", key.replace('.', "/"))
    }
}

/// Reject keys that would leave /proc/sys (`..`) before touching the filesystem.
fn check_key(op: &'static str, key: &str) -> Result<String, SysctlError> {
    if key.is_empty()
        || key.split(['/', '.']).any(|p| p == "..")
        || key.split('/').any(|p| p == "..")
    {
        return Err(SysctlError {
            op,
            key: key.into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad sysctl key"),
        });
    }
    Ok(path_of(key))
}

/// `sysctl -n KEY`
pub fn get(key: &str) -> Result<String, SysctlError> {
    let path = check_key("read", key)?;
    std::fs::read_to_string(&path)
        .map(|s| s.trim_end().to_string())
        .map_err(|source| SysctlError {
            op: "read",
            key: key.into(),
            source,
        })
}

/// `sysctl -w KEY=VALUE`; skips the write when the value is already set (cheaper, and works on
/// read-only keys that already hold the wanted value).
pub fn set(key: &str, value: &str) -> Result<(), SysctlError> {
    let path = check_key("write", key)?;
    if let Ok(cur) = std::fs::read_to_string(&path) {
        if cur.trim_end() == value {
            return Ok(());
        }
    }
    std::fs::write(&path, value).map_err(|source| SysctlError {
        op: "write",
        key: key.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_and_slashed_keys_map_to_proc_paths() {
        assert_eq!(
            path_of("net.ipv4.ip_forward"),
            "/proc/sys/net/ipv4/ip_forward"
        );
        assert_eq!(
            path_of("net/ipv4/conf/eth0.100/rp_filter"),
            "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
        );
    }

    #[test]
    fn traversal_is_rejected() {
        assert_eq!(
            set("net/../../etc/passwd", "x").unwrap_err().kind(),
            Kind::Invalid
        );
        assert!(get("").is_err());
    }

    #[test]
    fn reads_a_real_key() {
        let v = get("net.ipv4.ip_forward").unwrap();
        assert!(v == "0" || v == "1", "{v}");
    }
}
