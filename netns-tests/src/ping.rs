//! ICMP echo from inside a test namespace without spawning `ping`: a ping socket opened in
//! the namespace (the namespace must allow it: `net.ipv4.ping_group_range` = "0 0" for root),
//! used from any thread, one request per call, replies matched by source and sequence.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::topology::TestNs;

/// An ICMP ping socket (`SOCK_DGRAM`, `IPPROTO_ICMP`) opened inside a namespace:
/// the kernel fills in the identifier and checksum and hands back only this socket's
/// replies, without the IP header.
pub struct PingSocket(OwnedFd);

impl PingSocket {
    pub fn open(ns: &TestNs) -> Result<PingSocket> {
        let fd = ns.ns().run_in(|| {
            // SAFETY: socket(2) with constant arguments; the result is checked below.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: fd is a fresh descriptor that nothing else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })?;
        Ok(PingSocket(fd.with_context(|| {
            format!("an ICMP ping socket in {}", ns.name())
        })?))
    }

    /// One echo request (type 8) with sequence `seq` to `ip`.
    pub fn send(&self, ip: Ipv4Addr, seq: u16) -> std::io::Result<()> {
        let mut pkt = [0u8; 16];
        pkt[0] = 8;
        pkt[6..8].copy_from_slice(&seq.to_be_bytes());
        let sa = sockaddr(ip);
        // SAFETY: pkt and sa are valid for the lengths given for the duration of the call.
        let r = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                libc::MSG_DONTWAIT,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The arrival of an echo reply (type 0) from `ip` with sequence `seq`, waiting up to
    /// `wait`; other datagrams (late replies of an earlier round) are read and dropped.
    pub fn reply(&self, ip: Ipv4Addr, seq: u16, wait: Duration) -> Option<Instant> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: self.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_micros().div_ceil(1000) as libc::c_int;
            // SAFETY: one valid pollfd for the duration of the call.
            if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
                return None;
            }
            let mut buf = [0u8; 64];
            let mut from = sockaddr(Ipv4Addr::UNSPECIFIED);
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            // SAFETY: buf, from and len are valid and writable for the call.
            let r = unsafe {
                libc::recvfrom(
                    self.0.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut from as *mut libc::sockaddr_in).cast(),
                    &mut len,
                )
            };
            let now = Instant::now();
            let src = Ipv4Addr::from(u32::from_be(from.sin_addr.s_addr));
            if r >= 8 && buf[0] == 0 && buf[6..8] == seq.to_be_bytes() && src == ip {
                return Some(now);
            }
            if left.is_zero() {
                return None;
            }
        }
    }
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}
