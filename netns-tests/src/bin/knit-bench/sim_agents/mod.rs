//! The simulated agents of `controller-scale`: one TCP connection per host, speaking
//! `sdn_controller::proto` as the real agent does (Hello, the Full, then deltas: each delta's
//! base checked against the version held, a Full acknowledged at once, deltas together
//! `proto::ack_delay` later), no kernel programming.
//!
//! They stand for 10,000 machines but run on the controller's own cores, so they are kept
//! lean: [`THREADS`] threads, each a plain edge-triggered epoll loop over its share of the
//! connections (one read per arrival, no task to wake), each frame decoded with the agent's
//! own decoder, except that a thread decodes a delta's changes only when they differ from the
//! last ones it decoded ([`LastChanges`]): a change on the wide network reaches thousands of
//! them in the same bytes, which remote agents would each decode on their own CPU, not on
//! the controller's. Each still checks its delta's base and version. One host in
//! [`SAMPLE_EVERY`] also applies every change to an in-memory copy of its state, and that
//! copy is checked at the end ([`Agents::stop`]): the measured changes are puts each undone
//! by a delete, so every sampled host must end with exactly the state its Full gave it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use overlay_vxlan::HostDesired;
use sdn_controller::proto::{
    ack_delay, apply_changes, delta_parts, frame, split, AgentMsg, Change, ControllerMsg, Frame,
    FullAssembly, Split, PROTOCOL,
};

/// Threads running the agents: as many as the machine's cores.
const THREADS: usize = 2;
/// One host in SAMPLE_EVERY keeps its state (and has its Full's size measured).
const SAMPLE_EVERY: usize = 100;
/// Agents connecting (and taking their Full) at once, over all threads.
const CONNECTING: usize = 256;
/// After a wait that found some arrivals, an agent thread sleeps this long before it waits
/// again. A thread that waits while the controller is still writing a burst is woken for
/// each connection the controller reaches, and on these shared cores each wake-up (an IPI to
/// the other vCPU) is charged to the controller's writes. Remote agents cost the controller
/// nothing of the kind; this bounds the stand-ins' wake-ups to about one per LINGER, at the
/// price of up to LINGER added to an arrival's measured time.
const LINGER: Duration = Duration::from_micros(200);
/// One read asks for this much.
const READ_CHUNK: usize = 64 << 10;

/// What the simulated agents report to the measuring thread.
#[derive(Default)]
pub struct Shared {
    /// Agents holding a Full.
    pub synced: AtomicUsize,
    /// Agents whose stream failed (the reason of the first kept).
    pub failed: AtomicUsize,
    first_error: Mutex<Option<String>>,
    /// The address of the change being measured (IPv4 as u32; 0: none), and how many agents
    /// must get it.
    probe: AtomicU32,
    want: AtomicUsize,
    /// Agents that got it, and when the first and the last one did (ns after `epoch`):
    /// atomics, so that 10,000 agents recording an arrival do not queue on a lock the
    /// controller does not have.
    got: AtomicUsize,
    first_ns: AtomicU64,
    last_ns: AtomicU64,
    epoch: OnceLock<Instant>,
    /// Signalled by the arrival that makes `got` reach `want`.
    done: Mutex<()>,
    all_got: Condvar,
    /// Largest Full and FullPart frames seen (bytes of JSON), of the sampled hosts.
    pub full_max: AtomicUsize,
    pub part_max: AtomicUsize,
    stop: AtomicBool,
}

impl Shared {
    pub fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn fail(&self, host: &str, e: &anyhow::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert_with(|| format!("{host}: {e:#}"));
    }

    fn now_ns(&self) -> u64 {
        self.epoch.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }

    /// Measure the change about `addr` (an endpoint put or delete), which `want` agents must
    /// get: call before making it, then [`Shared::wait`].
    pub fn arm(&self, addr: u32, want: usize) {
        self.got.store(0, Ordering::Relaxed);
        self.first_ns.store(u64::MAX, Ordering::Relaxed);
        self.last_ns.store(0, Ordering::Relaxed);
        self.want.store(want, Ordering::Relaxed);
        self.probe.store(addr, Ordering::Release);
    }

    /// When the first and the last of the armed change's agents got it, if they all did
    /// within `limit`.
    pub fn wait(&self, limit: Duration) -> Option<(Instant, Instant)> {
        let want = self.want.load(Ordering::Relaxed);
        let g = self.done.lock().unwrap_or_else(|p| p.into_inner());
        let (_g, timeout) = self
            .all_got
            .wait_timeout_while(g, limit, |_| self.got.load(Ordering::Acquire) < want)
            .unwrap_or_else(|p| p.into_inner());
        self.probe.store(0, Ordering::Relaxed);
        if timeout.timed_out() {
            return None;
        }
        let epoch = *self.epoch.get_or_init(Instant::now);
        let at = |ns: &AtomicU64| epoch + Duration::from_nanos(ns.load(Ordering::Relaxed));
        Some((at(&self.first_ns), at(&self.last_ns)))
    }

    /// Records the arrival of the measured change, if `changes` carry it.
    fn probe(&self, changes: &[Change]) {
        let p = self.probe.load(Ordering::Acquire);
        if p == 0 {
            return;
        }
        let hit = changes.iter().any(|c| match c {
            Change::EndpointPut { endpoint, .. } => v4(endpoint.ip) == p,
            Change::EndpointDel { ip, .. } => v4(*ip) == p,
            _ => false,
        });
        if !hit {
            return;
        }
        let now = self.now_ns();
        self.first_ns.fetch_min(now, Ordering::Relaxed);
        self.last_ns.fetch_max(now, Ordering::Relaxed);
        // Release: whoever sees the count sees the time.
        let got = self.got.fetch_add(1, Ordering::Release) + 1;
        if got == self.want.load(Ordering::Relaxed) {
            let _g = self.done.lock().unwrap_or_else(|p| p.into_inner());
            self.all_got.notify_all();
        }
    }
}

fn v4(a: IpAddr) -> u32 {
    match a {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(_) => 0,
    }
}

/// Its endpoints, over every network.
fn count_endpoints(s: &HostDesired) -> usize {
    s.networks.iter().map(|n| n.endpoints.len()).sum()
}

/// `s` in one order: deltas append what they put, a Full lists in the controller's order.
fn normal(mut s: HostDesired) -> HostDesired {
    s.networks.sort_by(|a, b| a.id.cmp(&b.id));
    for n in &mut s.networks {
        n.endpoints.sort_by_key(|e| e.ip);
        n.hosts.sort_by_key(|h| h.underlay_ip);
    }
    s
}

fn json_len(s: &HostDesired) -> usize {
    serde_json::to_vec(s).map(|b| b.len()).unwrap_or(0)
}

/// A sampled host's state as its first Full gave it, and as its deltas made it since (by
/// the agent's own `proto::apply_changes`).
#[derive(Default)]
struct Sample {
    first: Option<HostDesired>,
    now: Option<HostDesired>,
}

/// One simulated agent's connection.
struct Conn {
    host: String,
    sock: TcpStream,
    /// Bytes of a frame not whole yet.
    buf: Vec<u8>,
    have: Option<u64>,
    /// A full state in parts is put together as the real agent does.
    parts: FullAssembly,
    /// The version to acknowledge when the ack timer of this connection fires.
    ack: Option<u64>,
    sample: Option<Sample>,
}

/// The changes of the last delta a thread decoded, by their JSON.
#[derive(Default)]
struct LastChanges {
    json: Vec<u8>,
    changes: Vec<Change>,
}

impl LastChanges {
    /// A delta frame's base, version and changes, the changes decoded only when their bytes
    /// differ from the last ones. `None`: not a delta laid out as the controller writes them
    /// ([`delta_parts`]), for the agent's own decoder.
    fn delta(&mut self, json: &[u8]) -> Result<Option<(u64, u64, &[Change])>> {
        let Some((base, version, changes)) = delta_parts(json) else {
            return Ok(None);
        };
        if changes != self.json.as_slice() {
            self.changes = serde_json::from_slice(changes).context("a delta's changes")?;
            self.json.clear();
            self.json.extend_from_slice(changes);
        }
        Ok(Some((base, version, &self.changes)))
    }
}

/// What one arrival did.
#[derive(Default)]
struct Arrival {
    /// The connection took its first Full.
    synced: bool,
    /// A delta was applied that the connection has not acknowledged yet.
    ack_timer: bool,
}

impl Conn {
    fn connect(addr: SocketAddr, host: usize) -> Result<Conn> {
        let mut sock = TcpStream::connect(addr).context("connecting")?;
        sock.set_nodelay(true)?;
        let name = format!("h{host}");
        let hello = AgentMsg::Hello {
            protocol: PROTOCOL,
            host: name.clone(),
            version: None,
        };
        sock.write_all(&frame(&hello)?)?;
        sock.set_nonblocking(true)?;
        Ok(Conn {
            host: name,
            sock,
            buf: Vec::new(),
            have: None,
            parts: FullAssembly::default(),
            ack: None,
            sample: host.is_multiple_of(SAMPLE_EVERY).then(Sample::default),
        })
    }

    /// Reads what the socket holds (edge-triggered: until a short read) and handles every
    /// whole frame.
    fn readable(
        &mut self,
        chunk: &mut [u8],
        last: &mut LastChanges,
        sh: &Shared,
    ) -> Result<Arrival> {
        let mut out = Arrival::default();
        loop {
            let n = match self.sock.read(chunk) {
                Ok(0) => bail!("closed by the controller"),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("reading"),
            };
            if self.buf.is_empty() {
                // Nearly every time: whole frames straight from the read.
                let used = self.frames(&chunk[..n], last, sh, &mut out)?;
                self.buf.extend_from_slice(&chunk[used..n]);
            } else {
                self.buf.extend_from_slice(&chunk[..n]);
                let buf = std::mem::take(&mut self.buf);
                let used = self.frames(&buf, last, sh, &mut out)?;
                self.buf = buf;
                self.buf.drain(..used);
                if self.buf.is_empty() && self.buf.capacity() > READ_CHUNK {
                    // A Full's buffer is not kept (10,000 of them would be gigabytes).
                    self.buf = Vec::new();
                }
            }
            if n < chunk.len() {
                break;
            }
        }
        Ok(out)
    }

    /// Handles the whole frames at the start of `data`; returns the bytes they took.
    fn frames(
        &mut self,
        data: &[u8],
        last: &mut LastChanges,
        sh: &Shared,
        out: &mut Arrival,
    ) -> Result<usize> {
        let mut at = 0;
        while let Split::Whole { json, len } = split(&data[at..])? {
            match last.delta(json)? {
                Some((base, version, changes)) => self.delta(base, version, changes, sh, out)?,
                None => self.handle(ControllerMsg::decode(json)?, sh, out)?,
            }
            at += len;
        }
        Ok(at)
    }

    fn delta(
        &mut self,
        base: u64,
        version: u64,
        changes: &[Change],
        sh: &Shared,
        out: &mut Arrival,
    ) -> Result<()> {
        if self.have != Some(base) {
            bail!("a delta from {base} while holding {:?}", self.have);
        }
        if let Some(now) = self.sample.as_mut().and_then(|s| s.now.as_mut()) {
            apply_changes(now, changes);
        }
        sh.probe(changes);
        self.have = Some(version);
        out.ack_timer |= self.ack.is_none();
        self.ack = Some(version);
        Ok(())
    }

    fn handle(&mut self, msg: ControllerMsg, sh: &Shared, out: &mut Arrival) -> Result<()> {
        let full = match msg {
            ControllerMsg::FullPart {
                version,
                state,
                last,
            } => {
                if self.sample.is_some() {
                    sh.part_max.fetch_max(json_len(&state), Ordering::Relaxed);
                }
                let whole = self
                    .parts
                    .add(version, state, last)
                    .map_err(anyhow::Error::msg)?;
                let Some((_, whole)) = whole else {
                    return Ok(());
                };
                (version, whole)
            }
            ControllerMsg::Full { version, state } => {
                if self.sample.is_some() {
                    sh.full_max.fetch_max(json_len(&state), Ordering::Relaxed);
                }
                (version, state)
            }
            ControllerMsg::Delta {
                base,
                version,
                changes,
            } => return self.delta(base, version, &changes, sh, out),
            other => bail!("unexpected {other:?}"),
        };
        let (version, state) = full;
        if let Some(s) = &mut self.sample {
            s.first.get_or_insert_with(|| state.clone());
            s.now = Some(state);
        }
        if self.have.is_none() {
            sh.synced.fetch_add(1, Ordering::Relaxed);
            out.synced = true;
        }
        self.have = Some(version);
        self.ack = None;
        self.send(&AgentMsg::Ack { version })
    }

    /// Writes one small frame (an agent's send buffer is empty but for its acks).
    fn send(&mut self, msg: &AgentMsg) -> Result<()> {
        let f = frame(msg)?;
        let mut at = 0;
        while at < f.len() {
            match self.sock.write(&f[at..]) {
                Ok(n) => at += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("writing"),
            }
        }
        Ok(())
    }
}

/// An epoll instance, closed on drop.
struct Epoll(i32);

impl Epoll {
    fn new() -> Result<Epoll> {
        // SAFETY: plain syscall; the fd is owned by the returned value.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("epoll_create1");
        }
        Ok(Epoll(fd))
    }

    fn add(&self, fd: i32, token: usize) -> Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token as u64,
        };
        // SAFETY: `ev` is a valid event for the duration of the call.
        if unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(std::io::Error::last_os_error()).context("epoll_ctl");
        }
        Ok(())
    }

    fn del(&self, fd: i32) {
        // SAFETY: removing an fd from our epoll set; a null event is allowed for DEL.
        unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
    }

    /// Ready tokens into `events`; returns how many. `timeout` is rounded up to whole ms (a
    /// timer due in under 1 ms must not turn the loop into a spin: with 10,000 acks due over
    /// 3 s, one nearly always is).
    fn wait(&self, events: &mut [libc::epoll_event], timeout: Duration) -> usize {
        let ms = timeout.as_micros().div_ceil(1000).min(50) as i32;
        // SAFETY: `events` is valid for `events.len()` entries.
        let n = unsafe { libc::epoll_wait(self.0, events.as_mut_ptr(), events.len() as i32, ms) };
        n.max(0) as usize
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.0) };
    }
}

/// What a sampled host found at the end: its name, its state after its first Full and now.
type Found = (String, Option<HostDesired>, Option<HostDesired>);

/// One thread's agents until told to stop.
fn run(addr: SocketAddr, hosts: Vec<usize>, sh: Arc<Shared>) -> Vec<Found> {
    let ep = match Epoll::new() {
        Ok(ep) => ep,
        Err(e) => {
            sh.fail("epoll", &e);
            return Vec::new();
        }
    };
    let mut conns: Vec<Option<Conn>> = Vec::with_capacity(hosts.len());
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut last = LastChanges::default();
    let mut timers: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    let mut connecting = 0;
    let gate = CONNECTING / THREADS;
    let drop_conn = |c: Conn, e: anyhow::Error, ep: &Epoll| {
        ep.del(c.sock.as_raw_fd());
        sh.fail(&c.host, &e);
    };
    while !sh.stop.load(Ordering::Relaxed) {
        while connecting < gate && conns.len() < hosts.len() {
            let h = hosts[conns.len()];
            let c = Conn::connect(addr, h).and_then(|c| {
                ep.add(c.sock.as_raw_fd(), conns.len())?;
                Ok(c)
            });
            match c {
                Ok(c) => {
                    conns.push(Some(c));
                    connecting += 1;
                }
                Err(e) => {
                    sh.fail(&format!("h{h}"), &e);
                    conns.push(None);
                }
            }
        }
        let next = timers
            .peek()
            .map_or(Duration::from_millis(50), |Reverse((at, _))| {
                at.saturating_duration_since(Instant::now())
            });
        let n = ep.wait(&mut events, next);
        if n > 0 && n < events.len() {
            // Let the rest of a burst gather before the next wait (see LINGER).
            std::thread::sleep(LINGER);
        }
        for ev in &events[..n] {
            let i = ev.u64 as usize;
            let Some(c) = conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            match c.readable(&mut chunk, &mut last, &sh) {
                Ok(a) => {
                    if a.synced {
                        connecting -= 1;
                    }
                    if a.ack_timer {
                        timers.push(Reverse((Instant::now() + ack_delay(), i)));
                    }
                }
                Err(e) => {
                    if let Some(c) = conns[i].take() {
                        if c.have.is_none() {
                            connecting -= 1;
                        }
                        drop_conn(c, e, &ep);
                    }
                }
            }
        }
        let now = Instant::now();
        while let Some(&Reverse((at, i))) = timers.peek() {
            if at > now {
                break;
            }
            timers.pop();
            let Some(c) = conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            let Some(version) = c.ack.take() else {
                continue;
            };
            if let Err(e) = c.send(&AgentMsg::Ack { version }) {
                if let Some(c) = conns[i].take() {
                    drop_conn(c, e, &ep);
                }
            }
        }
    }
    conns
        .into_iter()
        .flatten()
        .filter_map(|c| c.sample.map(|s| (c.host, s.first, s.now)))
        .collect()
}

/// The simulated agents of hosts `h0` .. `h{hosts-1}`, connected to the controller at `addr`.
pub struct Agents {
    pub shared: Arc<Shared>,
    threads: Vec<JoinHandle<Vec<Found>>>,
}

impl Agents {
    pub fn start(addr: SocketAddr, hosts: usize) -> Result<Agents> {
        let shared = Arc::new(Shared::default());
        shared.epoch.get_or_init(Instant::now);
        let threads = (0..THREADS)
            .map(|t| {
                let mine: Vec<usize> = (t..hosts).step_by(THREADS).collect();
                let sh = shared.clone();
                std::thread::Builder::new()
                    .name(format!("sim-agents-{t}"))
                    .spawn(move || run(addr, mine, sh))
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Agents { shared, threads })
    }

    /// Stops every agent; checks that each sampled host holds the state its first Full gave
    /// it (see the module's doc). Returns how many hosts were checked and how many endpoints
    /// they held.
    pub fn stop(self) -> Result<(usize, usize)> {
        self.shared.stop.store(true, Ordering::Relaxed);
        let mut found = Vec::new();
        for t in self.threads {
            found.extend(t.join().unwrap_or_default());
        }
        let (mut checked, mut endpoints) = (0, 0);
        for (host, first, now) in found {
            let (Some(first), Some(now)) = (first, now) else {
                bail!("{host} never got a Full");
            };
            let (first, now) = (normal(first), normal(now));
            if first != now {
                bail!(
                    "{host} ends with {} endpoints where its Full had {}: a delta was lost or \
                     wrong",
                    count_endpoints(&now),
                    count_endpoints(&first)
                );
            }
            checked += 1;
            endpoints += count_endpoints(&now);
        }
        Ok((checked, endpoints))
    }
}

#[cfg(test)]
mod tests;
