//! Serving agents on `--listen`: every replica accepts; a standby answers `NotLeader` with
//! the leader's address, the leader streams (see [`crate::proto`] for the conversation).
//!
//! **Who writes to an agent's socket.** A connection's task sends what an agent needs to
//! catch up (a Full, the deltas after the version it holds). Once caught up it hands the
//! socket to the fan-out ([`Outlets::fan_out`]): the leader, right after a batch, writes
//! each host's delta straight to the sockets of that host's caught-up connections, one
//! non-blocking write each, and wakes a task only when its socket would block, it was not
//! caught up, or its stream was reset. A change that reaches 10,000 hosts is then 10,000
//! writes from one loop, not 10,000 tasks woken to take the hub's lock and look up their
//! delta. The two writers never overlap: the fan-out writes only to an [`Outlet`] marked
//! idle (under its lock), and a task unmarks it before it writes.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tracing::{debug, info};

use crate::controller::Shared;
use crate::hub::{CatchUp, Changes, Delta};
use crate::metrics::{HostLabel, Metrics};
use crate::proto::{
    delta_frame, frame, split_full, AgentMsg, ControllerMsg, FrameReader, ProtoError, PART_ITEMS,
    PROTOCOL,
};

/// A fan-out to at least this many hosts is split over two threads.
const FAN_OUT_SPLIT: usize = 512;
/// How long an agent has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((conn, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(conn, &shared).await {
                debug!(%peer, error = %e, "agent connection ended");
            }
        });
    }
}

/// One agent connection's socket, shared by its task and the fan-out.
#[derive(Debug)]
pub struct Outlet {
    wr: OwnedWriteHalf,
    st: Mutex<OutletState>,
    /// Wakes the task: the fan-out could not send it what its stream got.
    wake: Notify,
}

#[derive(Debug, Default)]
struct OutletState {
    /// The version last written whole (or begun: see `rest`) to the socket.
    sent: Option<u64>,
    /// The task waits, caught up to `sent`: the fan-out may write.
    idle: bool,
    /// The end of a frame the fan-out began and the socket would not take: the task writes
    /// it before anything else.
    rest: Vec<u8>,
}

impl Outlet {
    fn new(wr: OwnedWriteHalf, have: Option<u64>) -> Outlet {
        Outlet {
            wr,
            st: Mutex::new(OutletState {
                sent: have,
                ..OutletState::default()
            }),
            wake: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, OutletState> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The task takes the socket back: the version written so far and what of a frame is
    /// still to write.
    fn take_over(&self) -> (Option<u64>, Vec<u8>) {
        let mut s = self.state();
        s.idle = false;
        (s.sent, std::mem::take(&mut s.rest))
    }

    /// The task, caught up to `sent`, lets the fan-out write.
    fn hand_over(&self, sent: Option<u64>) {
        let mut s = self.state();
        s.sent = sent;
        s.idle = true;
    }

    /// The fan-out's part: write `d` now if the task is idle at its base, else wake the task.
    /// Returns whether the delta went out (whole, or begun and left for the task to finish).
    fn offer(&self, d: Option<&Delta>, frames: &mut FrameCache) -> bool {
        let mut s = self.state();
        if let Some(d) = d.filter(|d| s.idle && s.sent == Some(d.base)) {
            // A delta of a few changes: a frame far below MAX_FRAME.
            if let Some(f) = frames.get(d) {
                // Straight to the (non-blocking) socket, not through tokio's readiness: at
                // 10,000 sockets a change, its per-socket state is one more cache miss each.
                // Readiness is left as it was; a task that waits on it after a would-block
                // here finds out for itself.
                match socket2::SockRef::from(self.wr.as_ref()).send(f) {
                    Ok(n) if n == f.len() => {
                        s.sent = Some(d.version);
                        return true;
                    }
                    Ok(n) => {
                        s.sent = Some(d.version);
                        s.rest = f[n..].to_vec();
                        s.idle = false;
                        drop(s);
                        self.wake.notify_one();
                        return true;
                    }
                    // Would block (or failed: the task's own write will say why).
                    Err(_) => {}
                }
            }
        }
        s.idle = false;
        drop(s);
        self.wake.notify_one();
        false
    }

    /// The task's write: all of `buf`, waiting for the socket as needed.
    async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            self.wr.writable().await?;
            match self.wr.try_write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The last delta frame the fan-out built: most hosts of a wide change get the same changes
/// at the same base, so most frames are the one before.
#[derive(Default)]
struct FrameCache {
    key: Option<(*const Changes, u64, u64)>,
    frame: Option<Vec<u8>>,
}

impl FrameCache {
    fn get(&mut self, d: &Delta) -> Option<&[u8]> {
        let key = (Arc::as_ptr(&d.changes), d.base, d.version);
        if self.key != Some(key) {
            self.key = Some(key);
            self.frame = delta_frame(d.base, d.version, &d.changes.json).ok();
        }
        self.frame.as_deref()
    }
}

/// The outlets of the connected agents, by host.
#[derive(Debug, Default)]
pub struct Outlets(Mutex<HashMap<String, Vec<Arc<Outlet>>>>);

impl Outlets {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Arc<Outlet>>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, host: &str, o: Arc<Outlet>) {
        self.map().entry(host.to_string()).or_default().push(o);
    }

    fn remove(&self, host: &str, o: &Arc<Outlet>) {
        let mut m = self.map();
        if let Some(v) = m.get_mut(host) {
            v.retain(|x| !Arc::ptr_eq(x, o));
            if v.is_empty() {
                m.remove(host);
            }
        }
    }

    /// After a batch: each moved host's delta to its connections (see the module's doc).
    /// Called in batch order, by one task: a socket gets its deltas in order.
    ///
    /// The map stays locked throughout, and each thread looks up its own half of the hosts:
    /// no list of 10,000 outlets is built (a lookup and a reference count each) before the
    /// first write. A connection that comes or goes meanwhile waits for the fan-out.
    pub fn fan_out(&self, moved: &[(String, Option<Delta>)], metrics: &Metrics) {
        let m = self.map();
        let offer = |hosts: &[(String, Option<Delta>)]| {
            let mut frames = FrameCache::default();
            hosts
                .iter()
                .filter_map(|(h, d)| m.get(h).map(|os| (os, d.as_ref())))
                .flat_map(|(os, d)| os.iter().map(move |o| (o, d)))
                .filter(|(o, d)| o.offer(*d, &mut frames))
                .count()
        };
        // A large fan-out is one write per socket, most of it the kernel's work (on loopback
        // the receiver's too): split over two threads, as many as the controller's runtime.
        let sent = if moved.len() >= FAN_OUT_SPLIT {
            let (a, b) = moved.split_at(moved.len() / 2);
            std::thread::scope(|s| {
                let other = s.spawn(|| offer(b));
                offer(a) + other.join().unwrap_or(0)
            })
        } else {
            offer(moved)
        };
        drop(m);
        metrics.deltas.inc_by(sent as u64);
    }
}

/// While a connection streams: counted in the connected gauge, its outlet registered; both
/// undone (and the host's lag series dropped) when it ends.
struct Connected<'a> {
    shared: &'a Shared,
    host: String,
    outlet: Arc<Outlet>,
}

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.shared.outlets.remove(&self.host, &self.outlet);
        self.shared.metrics.agents.dec();
        self.shared.metrics.lag.remove(&HostLabel {
            host: self.host.clone(),
        });
    }
}

async fn connection(conn: TcpStream, shared: &Shared) -> Result<(), ProtoError> {
    let _ = conn.set_nodelay(true);
    let (rd, wr) = conn.into_split();
    let mut rd = FrameReader::new(rd);
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, rd.next::<AgentMsg>()).await {
        Ok(Ok(Some(m))) => m,
        Ok(Ok(None)) | Err(_) => return Ok(()),
        Ok(Err(e)) => return Err(e),
    };
    let (host, have) = match hello {
        AgentMsg::Hello {
            protocol,
            host,
            version,
        } if protocol == PROTOCOL => (host, version),
        AgentMsg::Hello { protocol, .. } => {
            let message = format!("protocol {protocol} is not {PROTOCOL}");
            return send_once(wr, &ControllerMsg::Error { message }).await;
        }
        AgentMsg::Ack { .. } => {
            let message = "expected hello first".to_string();
            return send_once(wr, &ControllerMsg::Error { message }).await;
        }
    };
    let mut role_rx = shared.role.subscribe();
    let role = role_rx.borrow_and_update().clone();
    let subscribed = role
        .leading
        .then(|| {
            shared
                .hub
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_mut()
                .map(|h| h.subscribe(&host))
        })
        .flatten();
    let Some(stream_now) = subscribed else {
        let msg = ControllerMsg::NotLeader {
            leader: role.leader.clone(),
        };
        return send_once(wr, &msg).await;
    };
    let outlet = Arc::new(Outlet::new(wr, have));
    info!(%host, version = ?have, "agent connected");
    shared.metrics.agents.inc();
    shared.outlets.add(&host, outlet.clone());
    let _connected = Connected {
        shared,
        host: host.clone(),
        outlet: outlet.clone(),
    };
    // Acks are read and counted on their own task (the hub's lock is not taken: the
    // stream's version is an atomic the hub keeps).
    let lag = shared
        .metrics
        .lag
        .get_or_create(&HostLabel { host: host.clone() })
        .clone();
    let reader = tokio::spawn(async move {
        while let Ok(Some(AgentMsg::Ack { version })) = rd.next::<AgentMsg>().await {
            let now = stream_now.load(Ordering::Relaxed);
            lag.set(i64::try_from(now.max(version) - version).unwrap_or(i64::MAX));
        }
    });
    // Ends when the agent closes (or sends anything but an ack).
    let mut reader = AbortOnDrop(reader);
    loop {
        let (mut have, rest) = outlet.take_over();
        outlet.write_all(&rest).await?;
        let next = {
            let hub = shared.hub.lock().unwrap_or_else(|p| p.into_inner());
            match hub.as_ref() {
                Some(h) => h.catch_up(&host, have),
                None => return Ok(()),
            }
        };
        match next {
            CatchUp::Wait => {}
            CatchUp::Deltas(ds) => {
                for d in ds {
                    have = Some(d.version);
                    outlet
                        .write_all(&delta_frame(d.base, d.version, &d.changes.json)?)
                        .await?;
                    shared.metrics.deltas.inc();
                }
            }
            CatchUp::Full(ControllerMsg::Full { version, state }) => {
                have = Some(version);
                let mut parts = split_full(state, PART_ITEMS);
                if parts.len() == 1 {
                    let state = parts.remove(0);
                    outlet
                        .write_all(&frame(&ControllerMsg::Full { version, state })?)
                        .await?;
                } else {
                    let n = parts.len();
                    for (i, state) in parts.into_iter().enumerate() {
                        let last = i + 1 == n;
                        let part = ControllerMsg::FullPart {
                            version,
                            state,
                            last,
                        };
                        outlet.write_all(&frame(&part)?).await?;
                    }
                }
                shared.metrics.fulls.inc();
            }
            CatchUp::Full(other) => outlet.write_all(&frame(&other)?).await?,
        }
        outlet.hand_over(have);
        tokio::select! {
            _ = outlet.wake.notified() => {}
            r = role_rx.changed() => {
                let now = role_rx.borrow_and_update().clone();
                if r.is_err() || !now.leading || now.term != role.term {
                    // No longer the leader of the term this stream belongs to: the agent
                    // reconnects and finds the leader.
                    return Ok(());
                }
            }
            _ = &mut reader.0 => return Ok(()),
        }
    }
}

/// A connection that gets one message and ends.
async fn send_once(wr: OwnedWriteHalf, msg: &ControllerMsg) -> Result<(), ProtoError> {
    Ok(Outlet::new(wr, None).write_all(&frame(msg)?).await?)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
