//! DEL designed around the kernel's wait: return when an object is gone from the kernel's view,
//! and leave the memory-freeing wait to a detached helper process.
//!
//! What the kernel does (measured on 6.18 with `strace -T` and `ip -ts monitor`): `ip link del`
//! of a veth blocks ~17-24 ms in `sendto`, yet both ends, their addresses and routes are unlisted
//! and RTM_DELLINK is notified within ~1 ms of the call. The rest is `netdev_run_todo` after
//! the RTNL is released (`rcu_barrier`, waiting for the last references), which concerns memory,
//! not anything a caller can see. Likewise, closing an nfnetlink socket after a batch that deleted
//! set elements blocks 6-9 ms in `close`: its release flushes nf_tables' destroy work (an RCU
//! grace period); the elements themselves are gone when the batch's `send` returns.
//!
//! [`del_link`] therefore works like this, everything built before the helper is made:
//! 1. the link is looked up in the calling thread's namespace (its kind; for a veth its peer's
//!    index and namespace id) and must be the caller's link (same index, name and MAC: a
//!    [`Handle`] does not say which namespace it is in; otherwise the handle deletes it the old
//!    way, so a thread elsewhere never deletes another namespace's link by index); a monitor
//!    socket subscribed to RTNLGRP_LINK, listening to every namespace that has an id here
//!    (`NETLINK_LISTEN_ALL_NSID`: the peer's), a request socket, a pipe, and the 32 bytes of the
//!    RTM_DELLINK request;
//! 2. a double fork: the middle child shares our memory while we are suspended (`CLONE_VM |
//!    CLONE_VFORK`, as `posix_spawn` does, so no address space is copied or torn down for it),
//!    calls `setsid`, makes the helper with a raw `clone` (no `atfork` handler runs) and exits;
//!    we reap it at once, so no runtime is left with a zombie. The helper keeps only the request
//!    socket and the pipe's write end (stdio and every other descriptor closed: a runtime reading
//!    our stdout to EOF is not held up), sends the request, blocks through the kernel's wait,
//!    writes the errno of the ack (0 for success) into the pipe and exits. Both children make
//!    raw syscalls only (the caller may be multi-threaded: no allocation, no locks). They are born
//!    on the caller's CPU, which it is about to give up: on a loaded machine a new process
//!    otherwise waited 3-9 ms for a CPU, longer than everything else here together;
//! 3. the caller waits for whichever comes first: the RTM_DELLINK notifications of the link and,
//!    for a veth, of its peer (the peer is unregistered in the same batch, right after it, with
//!    its addresses and routes), or the helper's errno (a refusal, ENODEV included, comes fast
//!    because nothing was unregistered; or 0 if the whole deletion finished first). Every error
//!    the kernel can give is given before the link is unlisted, so every error still reaches
//!    the caller;
//! 4. if the peer's notification cannot come (its namespace has no id here) or events were
//!    dropped, a barrier settles it: an empty RTM_SETLINK on the same index, answered once the
//!    RTNL is free, i.e. once the whole unregister batch is done. It answers ENODEV and changes
//!    nothing, but costs an expedited grace period (~3 ms measured under load).
//!
//! Measured (kernel test, loaded 2-core VM): `del_link` of a veth into another namespace with
//! addresses and routes returns in ~1 ms; a blocking delete of the same pair takes 18-26 ms.
//! If the helper cannot be made, the request is made in-process (the old, slow way) so DEL
//! still works. The helper is named `knit-linger` (its `comm`) so tests can see none is left
//! behind; each lives as long as the kernel's wait (~20 ms). Orphans are reaped by init or the
//! nearest subreaper.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::netlink::{Handle, Link, NetlinkError, Result};
use crate::netns::NetNs;

/// The helper's `comm`, as `ps` and `/proc/PID/comm` show it.
pub const HELPER_NAME: &str = "knit-linger";
const HELPER_COMM: &[u8] = b"knit-linger\0";

/// How long the caller waits for the link to be unlisted before calling it a failure.
const UNLIST_TIMEOUT: Duration = Duration::from_secs(10);

const RTNLGRP_LINK: u32 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
const RTM_DELLINK: u16 = 17;
const RTM_SETLINK: u16 = 19;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const REQ_SEQ: u32 = 1;
const BARRIER_SEQ: u32 = 2;

/// `ip link del dev LINK` where `h` sees `link`, returning as soon as the link is gone from the
/// namespace's view; the kernel's remaining wait is left to a detached helper. Errors are those
/// of [`Handle::del_link`] (ENODEV when the link is already gone).
///
/// The helper's sockets are opened in the calling thread's namespace. A handle does not say
/// which namespace it is in, so that one is first checked to list `link` under the same index,
/// name and MAC; if it does not (the caller's thread is elsewhere), the link is deleted through
/// `h`, blocking through the kernel's wait as before, never in the wrong namespace.
pub fn del_link(h: &Handle, link: &Link) -> Result<()> {
    let here = match Handle::new()?.link_by_index(link.index) {
        Ok(l) => l,
        Err(e) if e.errno() == Some(libc::ENODEV) => return h.del_link(link.index),
        Err(e) => return Err(e),
    };
    if here.name != link.name || here.mac != link.mac {
        return h.del_link(link.index);
    }
    Sockets::open()?.del(&here)
}

/// `ip link del NAME` in `ns` (the calling thread's namespace when `None`) like [`del_link`];
/// a missing link is success (tolerant teardown).
pub fn del_link_by_name(ns: Option<&NetNs>, name: &str) -> Result<()> {
    let open = || -> Result<Option<(Sockets, Link)>> {
        let Some(link) = Handle::new()?.find_link(name)? else {
            return Ok(None);
        };
        Ok(Some((Sockets::open()?, link)))
    };
    let found = match ns {
        Some(ns) => ns.run_in(open)??,
        None => open()?,
    };
    let Some((socks, link)) = found else {
        return Ok(());
    };
    match socks.del(&link) {
        Err(e) if e.errno() == Some(libc::ENODEV) => Ok(()),
        r => r,
    }
}

/// Close `fd`, leaving the release of the underlying file to a detached helper: for an
/// nfnetlink socket after a batch that deleted elements, whose release waits out nf_tables'
/// destroy work (6-9 ms measured). The helper holds its copy until ours is closed (it waits
/// for EOF on a pipe we close after it), so its close is the last one and ours is cheap.
/// If the helper cannot be made, `fd` is simply closed here (and pays the wait).
pub fn close_detached(fd: impl IntoRawFd) {
    // SAFETY: into_raw_fd hands us the only owner's descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd.into_raw_fd()) };
    let Ok((rd, wr)) = pipe() else {
        return;
    };
    let (sock, go) = (fd.as_raw_fd(), rd.as_raw_fd());
    spawn_helper([sock, go], || {
        let mut b = [0u8; 1];
        // SAFETY: raw syscalls on descriptors the helper owns copies of; a stack buffer.
        unsafe {
            // Returns 0 (EOF) once the caller has closed its write end, after its own `fd`.
            while libc::read(go, b.as_mut_ptr().cast(), 1) < 0
                && *libc::__errno_location() == libc::EINTR
            {}
            libc::close(sock);
        }
    });
    drop(fd);
    drop(wr);
}

/// What [`del_link`] needs, opened in the link's namespace.
struct Sockets {
    /// Subscribed to link events; also carries the barrier.
    mon: Socket,
    /// Carries the RTM_DELLINK request (handed to the helper).
    req: Socket,
}

impl Sockets {
    fn open() -> Result<Sockets> {
        let sock = || -> Result<Socket> {
            let mut s = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
            s.bind_auto().map_err(NetlinkError::Socket)?;
            s.connect(&SocketAddr::new(0, 0))
                .map_err(NetlinkError::Socket)?;
            Ok(s)
        };
        let mon = sock()?;
        mon.add_membership(RTNLGRP_LINK)
            .map_err(NetlinkError::Socket)?;
        // Also the events of namespaces that have an id here: a veth peer's RTM_DELLINK.
        mon.set_listen_all_namespaces(true)
            .map_err(NetlinkError::Socket)?;
        let _ = mon.set_rx_buf_sz(1 << 20);
        Ok(Sockets { mon, req: sock()? })
    }

    fn del(self, link: &Link) -> Result<()> {
        let index = link.index;
        let kernel = |errno: i32| NetlinkError::Kernel {
            op: "del link",
            object: format!("link #{index}"),
            errno,
            ext: None,
        };
        let msg = link_msg(RTM_DELLINK, REQ_SEQ, index);
        let (rd, wr) = pipe().map_err(NetlinkError::Socket)?;
        let (req, report) = (self.req.as_raw_fd(), wr.as_raw_fd());
        let spawned = spawn_helper([req, report], || {
            let errno = request(req, &msg);
            let bytes = errno.to_ne_bytes();
            // SAFETY: raw write of a stack buffer to a descriptor the helper owns a copy of.
            unsafe { libc::write(report, bytes.as_ptr().cast(), bytes.len()) };
        });
        if !spawned {
            // No helper: the old way, blocking through the kernel's whole wait.
            return match request(req, &msg) {
                0 => Ok(()),
                e => Err(kernel(e)),
            };
        }
        // Our copies go: the helper holds the request socket and the only write end.
        drop(wr);
        drop(self.req);
        match wait_unlisted(&self.mon, rd.as_raw_fd(), &Watch::of(link))? {
            Outcome::Answer(0) | Outcome::Unlisted => Ok(()),
            Outcome::Answer(e) => Err(kernel(e)),
            Outcome::HostOnly => {
                barrier(&self.mon, index)?;
                Ok(())
            }
            Outcome::HelperLost => Err(NetlinkError::Socket(io::Error::other(format!(
                "the helper deleting link #{index} exited without an answer"
            )))),
            Outcome::Timeout => Err(kernel(libc::ETIMEDOUT)),
        }
    }
}

enum Outcome {
    /// The helper's errno (0: the kernel finished the whole deletion first).
    Answer(i32),
    /// RTM_DELLINK seen for the link and, for a veth, for its peer.
    Unlisted,
    /// RTM_DELLINK seen for the link, its peer's did not come (the barrier settles it).
    HostOnly,
    HelperLost,
    Timeout,
}

/// The notifications that say a link is gone: its own, in our namespace, and for a veth its
/// peer's, from the namespace with id `nsid` here (`None`: ours). The peer is unregistered in
/// the same batch, right after it.
struct Watch {
    index: u32,
    peer: Option<(u32, Option<i32>)>,
}

impl Watch {
    fn of(link: &Link) -> Watch {
        let veth = link.kind.as_deref() == Some("veth");
        Watch {
            index: link.index,
            peer: link
                .peer_index
                .filter(|_| veth)
                .map(|i| (i, link.link_netnsid)),
        }
    }
}

/// How long to wait for a peer's notification once the link's own was seen before settling
/// it with the barrier (a peer namespace without an id here never sends one to us).
const PEER_GRACE: Duration = Duration::from_millis(200);

/// Wait for the RTM_DELLINKs of `w` on `mon` or the helper's errno on `rd`.
fn wait_unlisted(mon: &Socket, rd: RawFd, w: &Watch) -> Result<Outcome> {
    let mut deadline = Instant::now() + UNLIST_TIMEOUT;
    let mut buf = vec![0u8; 64 * 1024];
    let (mut host_gone, mut peer_gone) = (false, w.peer.is_none());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(if host_gone {
                Outcome::HostOnly
            } else {
                Outcome::Timeout
            });
        }
        let mut fds = [
            libc::pollfd {
                fd: rd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: mon.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: fds is a valid array of two pollfd for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(NetlinkError::Socket(e));
        }
        if fds[1].revents != 0 {
            match recv_nsid(mon, &mut buf) {
                Ok((n, nsid)) => {
                    for (ty, _, body) in messages(&buf[..n]) {
                        match dellink_index(ty, body) {
                            Some(i) if i == w.index && nsid.is_none() => host_gone = true,
                            Some(i) if w.peer == Some((i, nsid)) => peer_gone = true,
                            _ => {}
                        }
                    }
                }
                // Events were dropped (ENOBUFS): ask the kernel instead (a barrier, too).
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    if probe(mon, w.index)? == libc::ENODEV {
                        return Ok(Outcome::Unlisted);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(NetlinkError::Socket(e)),
            }
            if host_gone && peer_gone {
                return Ok(Outcome::Unlisted);
            }
            if host_gone {
                deadline = deadline.min(Instant::now() + PEER_GRACE);
            }
        }
        if fds[0].revents != 0 {
            let mut b = [0u8; 4];
            // SAFETY: b is a valid writable buffer of 4 bytes.
            let r = unsafe { libc::read(rd, b.as_mut_ptr().cast(), b.len()) };
            if r == 4 {
                return Ok(Outcome::Answer(i32::from_ne_bytes(b)));
            }
            if r >= 0 {
                return Ok(if host_gone {
                    Outcome::HostOnly
                } else {
                    Outcome::HelperLost
                });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(NetlinkError::Socket(e));
            }
        }
    }
}

/// One datagram and the id (here) of the namespace it comes from, `None` for our own.
fn recv_nsid(s: &Socket, buf: &mut [u8]) -> io::Result<(usize, Option<i32>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    // SAFETY: msg describes valid buffers for the call.
    let r = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut nsid = None;
    // SAFETY: walking the control messages the kernel wrote into cbuf, as CMSG_* define.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_NETLINK
                && (*c).cmsg_type == libc::NETLINK_LISTEN_ALL_NSID
            {
                nsid = Some(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>()));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((r as usize, nsid))
}

/// Wait until the RTNL section that unlisted the link is over (see the module note).
fn barrier(mon: &Socket, index: u32) -> Result<()> {
    probe(mon, index).map(|_| ())
}

/// An empty RTM_SETLINK on `index`: changes nothing, answers once the RTNL is ours (ENODEV
/// when the link is gone). Returns the errno of the answer.
fn probe(mon: &Socket, index: u32) -> Result<i32> {
    let msg = link_msg(RTM_SETLINK, BARRIER_SEQ, index);
    mon.send(&msg, 0).map_err(NetlinkError::Socket)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = loop {
            // SAFETY: buf is a valid writable buffer of buf.len() bytes.
            let r = unsafe { libc::recv(mon.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if r >= 0 {
                break r as usize;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) | Some(libc::ENOBUFS) => continue,
                _ => return Err(NetlinkError::Socket(e)),
            }
        };
        if let Some(errno) = ack_errno(&buf[..n], BARRIER_SEQ) {
            return Ok(errno);
        }
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints; on success both are new descriptors we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// An rtnetlink link request without attributes: nlmsghdr + ifinfomsg with only the index.
fn link_msg(ty: u16, seq: u32, index: u32) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[0..4].copy_from_slice(&32u32.to_ne_bytes());
    m[4..6].copy_from_slice(&ty.to_ne_bytes());
    m[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // ifinfomsg: family (1), pad (1), type (2), index (4), flags (4), change (4).
    m[20..24].copy_from_slice(&(index as i32).to_ne_bytes());
    m
}

/// The netlink messages of a datagram: (type, seq, payload).
fn messages(mut b: &[u8]) -> impl Iterator<Item = (u16, u32, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            return None;
        }
        let ty = u16::from_ne_bytes([b[4], b[5]]);
        let seq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
        let body = &b[NLMSG_HDRLEN..len];
        b = &b[((len + 3) & !3).min(b.len())..];
        Some((ty, seq, body))
    })
}

/// The index of the link an RTM_DELLINK message is about; `None` for any other message, and
/// for an AF_BRIDGE one (it only says the link left its bridge).
fn dellink_index(ty: u16, body: &[u8]) -> Option<u32> {
    (ty == RTM_DELLINK && body.len() >= 8 && body[0] == libc::AF_UNSPEC as u8)
        .then(|| i32::from_ne_bytes([body[4], body[5], body[6], body[7]]) as u32)
}

/// The errno of the ack for `seq` in the datagram, if it holds one (0 for success).
fn ack_errno(b: &[u8], seq: u32) -> Option<i32> {
    messages(b).find_map(|(ty, s, body)| {
        (ty == NLMSG_ERROR && s == seq && body.len() >= 4)
            .then(|| -i32::from_ne_bytes([body[0], body[1], body[2], body[3]]))
    })
}

/// Send `msg` on `sock` and wait for its ack; the errno (0 for success). Raw syscalls and
/// stack buffers only: this runs in the helper after `fork`.
fn request(sock: RawFd, msg: &[u8; 32]) -> i32 {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    loop {
        // SAFETY: msg is a valid buffer of 32 bytes.
        let r = unsafe { libc::send(sock, msg.as_ptr().cast(), msg.len(), 0) };
        if r >= 0 {
            break;
        }
        if errno() != libc::EINTR {
            return errno();
        }
    }
    let mut buf = [0u8; 1024];
    loop {
        // SAFETY: buf is a valid writable stack buffer of buf.len() bytes.
        let r = unsafe { libc::recv(sock, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if r < 0 {
            match errno() {
                libc::EINTR => continue,
                e => return e,
            }
        }
        if let Some(e) = ack_errno(&buf[..r as usize], REQ_SEQ) {
            return e;
        }
    }
}

/// Run `job` in a detached grandchild that keeps only the descriptors `keep` (stdio and all
/// others closed), then exits. `false` if the helper could not be made. `job` must make raw
/// syscalls only: the caller may be multi-threaded, and only the forking thread exists in the
/// child.
///
/// The middle child shares our memory and we are suspended until it exits (`CLONE_VM |
/// CLONE_VFORK`, as `posix_spawn` does): no copy of the address space is made or torn down
/// for it, only for the grandchild (a raw `clone`, so no `atfork` handler runs in either).
/// Signals are blocked around it so no handler of ours runs on the shared memory.
fn spawn_helper(keep: [RawFd; 2], mut job: impl FnMut()) -> bool {
    struct Middle<'a> {
        keep: [RawFd; 2],
        job: &'a mut dyn FnMut(),
        mask: libc::sigset_t,
        pinned: bool,
        /// Our affinity, which the grandchild takes back.
        cpus: libc::cpu_set_t,
    }
    extern "C" fn middle(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: arg is the Middle below, alive while we are suspended; raw syscalls only.
        unsafe {
            let m = &mut *arg.cast::<Middle<'_>>();
            libc::setsid();
            let size = std::mem::size_of::<libc::cpu_set_t>();
            let none: libc::c_long = 0;
            let pid = libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, none, none);
            if pid == 0 {
                // The grandchild, in its own copy of the address space.
                libc::pthread_sigmask(libc::SIG_SETMASK, &m.mask, std::ptr::null_mut());
                if m.pinned {
                    libc::sched_setaffinity(0, size, &m.cpus);
                }
                libc::prctl(libc::PR_SET_NAME, HELPER_COMM.as_ptr());
                close_all_but(m.keep);
                (m.job)();
                libc::_exit(0);
            }
        }
        0
    }
    let mut stack = vec![0u8; 64 * 1024];
    // SAFETY: an all-zero sigset_t is valid input to sigfillset/pthread_sigmask.
    let (mut all, mut mask) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: all-zero sigset_t and cpu_set_t are valid (empty) sets.
    let (zero_mask, zero_cpus) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    let mut m = Middle {
        keep,
        job: &mut job,
        mask: zero_mask,
        pinned: false,
        cpus: zero_cpus,
    };
    // The children are born on this thread's CPU, which it is about to give up (suspended,
    // then waiting for the helper): under load they start at once instead of queueing for
    // another CPU. This thread and the helper take the affinity back right after.
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: plain syscalls on valid cpu_set_t values.
    m.pinned = unsafe {
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        let cpu = libc::sched_getcpu();
        cpu >= 0 && libc::sched_getaffinity(0, size, &mut m.cpus) == 0 && {
            libc::CPU_SET(cpu as usize, &mut one);
            libc::sched_setaffinity(0, size, &one) == 0
        }
    };
    // SAFETY: the stack is ours and unused while the child runs on it (we are suspended);
    // its top is aligned down to 16 bytes; the child only makes raw syscalls on shared memory.
    let pid = unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut mask);
        m.mask = mask;
        let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
        let pid = libc::clone(
            middle,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut m as *mut Middle<'_>).cast(),
        );
        libc::pthread_sigmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut());
        if m.pinned {
            libc::sched_setaffinity(0, size, &m.cpus);
        }
        pid
    };
    if pid < 0 {
        return false;
    }
    let mut status = 0;
    // SAFETY: reaping our own child, which has exited (vfork); ECHILD (SIGCHLD ignored) is fine.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
    true
}

/// Close every descriptor but the (at most two) in `keep`, with `close_range` (raw syscall,
/// Linux >= 5.9). Only for a freshly forked helper: it closes descriptors that other owners in
/// the parent's memory still believe theirs.
fn close_all_but(keep: [RawFd; 2]) {
    let (a, b) = if keep[0] <= keep[1] {
        (keep[0] as u32, keep[1] as u32)
    } else {
        (keep[1] as u32, keep[0] as u32)
    };
    let close_range = |first: u32, last: u32| {
        if first <= last {
            // SAFETY: raw syscall; the helper never touches the closed descriptors again.
            unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
        }
    };
    if a > 0 {
        close_range(0, a - 1);
    }
    if b > a + 1 {
        close_range(a + 1, b - 1);
    }
    close_range(b.saturating_add(1), u32::MAX);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_msg_is_an_rtnetlink_request_for_the_index() {
        let m = link_msg(RTM_DELLINK, 7, 42);
        let (ty, seq, body) = messages(&m).next().unwrap();
        assert_eq!((ty, seq, body.len()), (RTM_DELLINK, 7, 16));
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(dellink_index(ty, body), Some(42));
        let set = link_msg(RTM_SETLINK, 7, 42);
        let (ty, _, body) = messages(&set).next().unwrap();
        assert_eq!(dellink_index(ty, body), None);
        // A bridge port's AF_BRIDGE RTM_DELLINK is not the link going.
        let mut br = m;
        br[16] = libc::AF_BRIDGE as u8;
        let (ty, _, body) = messages(&br).next().unwrap();
        assert_eq!(dellink_index(ty, body), None);
    }

    fn ack(seq: u32, errno: i32) -> Vec<u8> {
        let mut m = vec![0u8; NLMSG_HDRLEN + 4];
        m[0..4].copy_from_slice(&((NLMSG_HDRLEN + 4) as u32).to_ne_bytes());
        m[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m[8..12].copy_from_slice(&seq.to_ne_bytes());
        m[16..20].copy_from_slice(&(-errno).to_ne_bytes());
        m
    }

    #[test]
    fn acks_are_matched_by_sequence_among_other_messages() {
        let mut d = link_msg(RTM_DELLINK, 0, 3).to_vec();
        d.extend(ack(1, libc::ENODEV));
        d.extend(ack(2, 0));
        assert_eq!(ack_errno(&d, 1), Some(libc::ENODEV));
        assert_eq!(ack_errno(&d, 2), Some(0));
        assert_eq!(ack_errno(&d, 3), None);
        // A truncated datagram ends the walk instead of reading past it.
        assert_eq!(ack_errno(&d[..d.len() - 3], 2), None);
    }
}
