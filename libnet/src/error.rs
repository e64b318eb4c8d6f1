//! Error kinds shared by every libnet module.
//!
//! Each module has its own error enum that names the object that failed; every one of them can say
//! which [`Kind`] it is, so callers (the CNI skel, the agent) decide retry vs. report without
//! string matching. Errno values are classified once, here, at the kernel boundary.

use std::fmt;

/// What a caller can do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The object does not exist (a link, a netns, a reservation).
    NotFound,
    /// The object already exists and is not ours to reuse.
    Exists,
    /// Someone else holds it (a lock, a busy device).
    Busy,
    /// The request itself is wrong: bad config, out of range, unsupported.
    Invalid,
    /// Try again: interrupted, out of buffers, timed out.
    Transient,
    /// A bug or an unexpected kernel answer.
    Internal,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Kind::NotFound => "not found",
            Kind::Exists => "exists",
            Kind::Busy => "busy",
            Kind::Invalid => "invalid",
            Kind::Transient => "transient",
            Kind::Internal => "internal",
        };
        f.write_str(s)
    }
}

/// Classify an errno once, at the boundary where it enters libnet.
pub fn kind_of_errno(errno: i32) -> Kind {
    match errno {
        libc::ENOENT | libc::ENODEV | libc::ESRCH | libc::EADDRNOTAVAIL | libc::ENXIO => {
            Kind::NotFound
        }
        libc::EEXIST | libc::EADDRINUSE | libc::ENOTEMPTY => Kind::Exists,
        libc::EBUSY | libc::EWOULDBLOCK => Kind::Busy,
        libc::EINVAL
        | libc::ERANGE
        | libc::EOPNOTSUPP
        | libc::ENAMETOOLONG
        | libc::E2BIG
        | libc::EAFNOSUPPORT
        | libc::EPERM
        | libc::EACCES
        | libc::ENETUNREACH => Kind::Invalid,
        libc::EINTR | libc::ENOBUFS | libc::ENOMEM | libc::ETIMEDOUT => Kind::Transient,
        _ => Kind::Internal,
    }
}

/// Implemented by every libnet error type.
pub trait HasKind {
    fn kind(&self) -> Kind;
}

impl HasKind for std::io::Error {
    fn kind(&self) -> Kind {
        match self.raw_os_error() {
            Some(e) => kind_of_errno(e),
            None => match std::io::Error::kind(self) {
                std::io::ErrorKind::NotFound => Kind::NotFound,
                std::io::ErrorKind::AlreadyExists => Kind::Exists,
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => Kind::Invalid,
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut => Kind::Transient,
                _ => Kind::Internal,
            },
        }
    }
}
