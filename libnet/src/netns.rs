//! Network namespaces: an owned fd per namespace, opened once, and `run_in` to execute a closure
//! inside one on a short-lived OS thread (never on an async worker: `setns` changes the calling
//! thread only, and a thread that changed namespace must not be reused for anything else).
//!
//! Named namespaces follow iproute2's convention (`ip netns add NAME`): a bind mount of the
//! namespace file on `/run/netns/NAME`, so `ip netns exec` and runtimes see ours.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::{kind_of_errno, HasKind, Kind};

/// Where iproute2 keeps named network namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("netns {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("netns {op} {path}: {errno}")]
    Sys {
        op: &'static str,
        path: String,
        errno: nix::errno::Errno,
    },
    #[error("netns name {0:?} is not a valid namespace name")]
    BadName(String),
    #[error("thread running in netns {0} panicked")]
    Panicked(String),
}

impl HasKind for NetnsError {
    fn kind(&self) -> Kind {
        match self {
            NetnsError::Io { source, .. } => HasKind::kind(source),
            NetnsError::Sys { errno, .. } => kind_of_errno(*errno as i32),
            NetnsError::BadName(_) => Kind::Invalid,
            NetnsError::Panicked(_) => Kind::Internal,
        }
    }
}

/// An open network namespace. Dropping it closes the fd; the namespace lives on while anything
/// (a process, a bind mount) still references it.
#[derive(Debug)]
pub struct NetNs {
    fd: OwnedFd,
    path: PathBuf,
}

impl NetNs {
    /// Open the namespace at `path` (e.g. `/run/netns/foo`, `/proc/PID/ns/net`).
    pub fn open(path: impl AsRef<Path>) -> Result<NetNs, NetnsError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| NetnsError::Io {
            op: "open",
            path: path.display().to_string(),
            source,
        })?;
        Ok(NetNs {
            fd: file.into(),
            path: path.to_path_buf(),
        })
    }

    /// The namespace of the calling thread.
    pub fn current() -> Result<NetNs, NetnsError> {
        NetNs::open("/proc/thread-self/ns/net")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` inside this namespace on a fresh OS thread and return its result.
    ///
    /// Sockets opened inside `f` stay bound to this namespace after the thread ends, which is how
    /// a netlink handle per namespace is made once and used from anywhere.
    pub fn run_in<T, F>(&self, f: F) -> Result<T, NetnsError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let fd = self.fd.as_fd();
        std::thread::scope(|s| {
            s.spawn(move || {
                setns(fd, CloneFlags::CLONE_NEWNET).map_err(|errno| NetnsError::Sys {
                    op: "setns",
                    path: self.path.display().to_string(),
                    errno,
                })?;
                Ok(f())
            })
            .join()
            .map_err(|_| NetnsError::Panicked(self.path.display().to_string()))?
        })
    }

    /// Take an exclusive `flock` on the namespace file, held until this `NetNs` is dropped:
    /// what the reference plugins do (go-filemutex on the netns path) to serialise changes
    /// to one namespace's shared tables (sbr picks free routing table ids).
    pub fn lock_exclusive(&self) -> Result<(), NetnsError> {
        // SAFETY: flock on an fd this NetNs owns; blocks until the lock is ours.
        let rc = unsafe { libc::flock(self.fd.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(NetnsError::Io {
                op: "flock",
                path: self.path.display().to_string(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Create a named namespace like `ip netns add NAME` and return it open.
    pub fn create_named(name: &str) -> Result<NetNs, NetnsError> {
        validate_name(name)?;
        std::fs::create_dir_all(NETNS_RUN_DIR).map_err(|source| NetnsError::Io {
            op: "mkdir",
            path: NETNS_RUN_DIR.into(),
            source,
        })?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        let display = path.display().to_string();
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| NetnsError::Io {
                op: "create",
                path: display.clone(),
                source,
            })?;
        let target = path.clone();
        let made = std::thread::spawn(move || -> Result<(), NetnsError> {
            let sys = |op, errno| NetnsError::Sys {
                op,
                path: target.display().to_string(),
                errno,
            };
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| sys("unshare", e))?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| sys("bind mount", e))
        })
        .join()
        .map_err(|_| NetnsError::Panicked(display.clone()))?;
        if let Err(e) = made {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        NetNs::open(&path)
    }

    /// Delete a named namespace like `ip netns del NAME`; a missing one is not an error.
    pub fn delete_named(name: &str) -> Result<(), NetnsError> {
        validate_name(name)?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(errno) => {
                return Err(NetnsError::Sys {
                    op: "umount",
                    path: path.display().to_string(),
                    errno,
                })
            }
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(NetnsError::Io {
                op: "remove",
                path: path.display().to_string(),
                source,
            }),
        }
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for NetNs {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// A named namespace that is deleted again when dropped: scratch "hosts" and "containers" for
/// tests, benchmarks and demos. Names should carry a unique prefix (`knt-<pid>-...`).
#[derive(Debug)]
pub struct ScratchNs {
    name: String,
    ns: NetNs,
}

impl ScratchNs {
    pub fn create(name: &str) -> Result<ScratchNs, NetnsError> {
        let ns = NetNs::create_named(name)?;
        Ok(ScratchNs {
            name: name.to_string(),
            ns,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(&self.name)
    }
}

impl std::ops::Deref for ScratchNs {
    type Target = NetNs;
    fn deref(&self) -> &NetNs {
        &self.ns
    }
}

impl AsFd for ScratchNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ns.as_fd()
    }
}

impl AsRawFd for ScratchNs {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.ns.as_raw_fd()
    }
}

impl Drop for ScratchNs {
    fn drop(&mut self) {
        let _ = NetNs::delete_named(&self.name);
    }
}

fn validate_name(name: &str) -> Result<(), NetnsError> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 255
        && !name.contains('/')
        && !name.contains('\0');
    if ok {
        Ok(())
    } else {
        Err(NetnsError::BadName(name.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_names_that_escape_the_run_dir() {
        for bad in ["", ".", "..", "../x", "a/b"] {
            assert!(
                matches!(validate_name(bad), Err(NetnsError::BadName(_))),
                "{bad}"
            );
        }
        validate_name("knt-1-a").unwrap();
    }

    #[test]
    fn opening_a_missing_path_is_not_found() {
        let err = NetNs::open("/nonexistent/ns/net").unwrap_err();
        assert_eq!(err.kind(), Kind::NotFound);
    }
}
