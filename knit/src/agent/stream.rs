//! The stream from the leading controller ([`sdn_controller::proto`]): find the leader in etcd
//! (`P/controller/leader`), connect, `Hello`, then apply the `Full` (or the `FullPart`s of a
//! large one, merged and applied as one) and the `Delta`s in order, acknowledging a Full at once
//! and deltas together, a moment after the first of them ([`sdn_controller::proto::ack_delay`]). On a
//! lost stream, `NotLeader`, or a leader key that names another replica (watched): reconcile the kernel
//! to the state held, and connect again with backoff (100 ms doubling to 5 s). The kernel
//! state stays meanwhile: traffic between existing containers never waits for the
//! controller.

use std::sync::Arc;
use std::time::Duration;

use sdn_controller::proto::{
    write_frame, Acks, AgentMsg, ControllerMsg, FrameReader, FullAssembly, PROTOCOL,
};
use store::etcd::{Kind, WatchEvent};
use store::AsyncEtcdStore;
use tokio::net::TcpStream;
use tracing::{info, warn};

use super::overlay::{DeltaOutcome, Overlay};

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a stream opened on a `NotLeader` answer waits for the leader key to name it.
const LEADER_GRACE: Duration = Duration::from_secs(2);
/// Pause after a failed read or watch of the leader key.
const LEADER_RETRY: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How a session ended.
enum End {
    /// The replica is not the leader; it may have named one.
    NotLeader(Option<String>),
    /// The controller closed, refused, sent something out of order, or the leader changed.
    Closed(String),
}

/// Runs forever (until the task is aborted).
pub async fn run(ov: Arc<Overlay>, st: AsyncEtcdStore, host: String) {
    let mut backoff = BACKOFF_FIRST;
    let mut hint: Option<String> = None;
    loop {
        let addr = match hint.take() {
            Some(a) => Some(a),
            None => match leader(&st).await {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "reading the controller leader key");
                    None
                }
            },
        };
        if let Some(addr) = addr {
            let (end, got_state) = session(&ov, &st, &addr, &host).await;
            ov.metrics.connected.set(0);
            match end {
                End::NotLeader(l) => {
                    info!(controller = %addr, leader = ?l, "not the leader");
                    hint = l.filter(|l| *l != addr);
                }
                End::Closed(why) => warn!(controller = %addr, reason = %why, "stream lost"),
            }
            if got_state {
                backoff = BACKOFF_FIRST;
                let o = ov.clone();
                let _ = tokio::task::spawn_blocking(move || o.reconcile()).await;
            }
        }
        if hint.is_none() {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// One connection; also says whether any state arrived on it.
async fn session(ov: &Arc<Overlay>, st: &AsyncEtcdStore, addr: &str, host: &str) -> (End, bool) {
    let conn = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return (End::Closed(format!("connecting: {e}")), false),
        Err(_) => return (End::Closed("connecting: timed out".into()), false),
    };
    let _ = conn.set_nodelay(true);
    let (rd, mut wr) = conn.into_split();
    let hello = AgentMsg::Hello {
        protocol: PROTOCOL,
        host: host.to_string(),
        version: ov.version(),
    };
    if let Err(e) = write_frame(&mut wr, &hello).await {
        return (End::Closed(format!("sending hello: {e}")), false);
    }
    let mut frames = FrameReader::new(rd);
    let mut got_state = false;
    // The parts of a full state received so far.
    let mut parts = FullAssembly::default();
    // A leader that lost its lease may not have closed the connection: the leader key says.
    let mut moved = Watching(tokio::spawn(leader_moved(st.clone(), addr.to_string())));
    let mut acks = Acks::default();
    let end = loop {
        let msg = tokio::select! {
            // Cancel-safe: a frame cut short stays in the reader.
            m = frames.next::<ControllerMsg>() => m,
            version = acks.due() => {
                if let Err(e) = write_frame(&mut wr, &AgentMsg::Ack { version }).await {
                    break End::Closed(format!("sending ack: {e}"));
                }
                continue;
            }
            l = &mut moved.0 => match l {
                Ok(l) => break End::Closed(format!("the leader is now {l}")),
                Err(_) => break End::Closed("watching the leader key failed".into()),
            },
        };
        let msg = match msg {
            Ok(Some(m)) => m,
            Ok(None) => break End::Closed("closed by the controller".into()),
            Err(e) => break End::Closed(e.to_string()),
        };
        let msg = match msg {
            ControllerMsg::FullPart {
                version,
                state,
                last,
            } => match parts.add(version, state, last) {
                Ok(Some((version, state))) => ControllerMsg::Full { version, state },
                Ok(None) => continue,
                Err(e) => break End::Closed(e),
            },
            other => other,
        };
        let ack = match msg {
            ControllerMsg::NotLeader { leader } => break End::NotLeader(leader),
            ControllerMsg::Error { message } => break End::Closed(format!("refused: {message}")),
            ControllerMsg::FullPart { .. } => continue,
            ControllerMsg::Full { version, state } => {
                let o = ov.clone();
                if tokio::task::spawn_blocking(move || o.apply_full(version, state))
                    .await
                    .is_err()
                {
                    break End::Closed("applying a full state panicked".into());
                }
                got_state = true;
                ov.metrics.connected.set(1);
                info!(controller = %addr, version, "full state applied");
                // A full state is acknowledged at once (it starts the stream).
                acks.clear();
                if let Err(e) = write_frame(&mut wr, &AgentMsg::Ack { version }).await {
                    break End::Closed(format!("sending ack: {e}"));
                }
                continue;
            }
            ControllerMsg::Delta {
                base,
                version,
                changes,
            } => {
                let o = ov.clone();
                let r = tokio::task::spawn_blocking(move || o.apply_delta(base, version, &changes))
                    .await;
                match r {
                    Ok(DeltaOutcome::Applied) => version,
                    Ok(DeltaOutcome::OutOfOrder { held }) => {
                        break End::Closed(format!(
                            "a delta from version {base} while holding {held:?}: resync"
                        ))
                    }
                    Err(_) => break End::Closed("applying a delta panicked".into()),
                }
            }
        };
        // Deltas are acknowledged together, a while after the first one not yet acknowledged:
        // a change that reaches every host is not followed by as many acks while the
        // controller is still sending it.
        acks.applied(ack);
    };
    (end, got_state)
}

/// Resolves with the leader key's value once it names a replica other than `addr`: one watch
/// on the key from the revision it was read at (not every agent re-reading it every few
/// seconds: 10,000 agents would be thousands of reads a second). A broken watch is resumed.
async fn leader_moved(st: AsyncEtcdStore, addr: String) -> String {
    let other = |v: &[u8]| {
        let l = String::from_utf8_lossy(v).trim().to_string();
        (!l.is_empty() && l != addr).then_some(l)
    };
    let mut grace = true;
    let rev = loop {
        match st.leader().await {
            Ok((held, rev)) => match held.and_then(|(a, _)| other(a.as_bytes())) {
                // Connected on a NotLeader answer ahead of the key: a newly elected leader
                // writes it, so it gets a moment to catch up.
                Some(_) if grace => {
                    grace = false;
                    tokio::time::sleep(LEADER_GRACE).await;
                }
                Some(l) => return l,
                None => break rev,
            },
            Err(e) => {
                warn!(error = %e, "reading the controller leader key");
                tokio::time::sleep(LEADER_RETRY).await;
            }
        }
    };
    let mut w = st.watch(Kind::Controller, rev + 1);
    loop {
        match w.next().await {
            Ok(WatchEvent::Put { key, value, .. }) if key == LEADER_KEY => {
                if let Some(l) = other(&value) {
                    return l;
                }
            }
            Ok(WatchEvent::Resync { records, .. }) => {
                if let Some(l) = records
                    .iter()
                    .find(|(k, _)| k == LEADER_KEY)
                    .and_then(|(_, v)| other(v))
                {
                    return l;
                }
            }
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, "watching the controller leader key");
                tokio::time::sleep(LEADER_RETRY).await;
            }
        }
    }
}

/// The leader key, relative to `Kind::Controller`'s directory.
const LEADER_KEY: &str = "leader";

/// The session's leader watch, stopped with it.
struct Watching(tokio::task::JoinHandle<String>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The leading controller's address from its election key, if one leads now.
async fn leader(st: &store::AsyncEtcdStore) -> Result<Option<String>, store::Error> {
    let (held, _) = st.leader().await?;
    Ok(held
        .map(|(addr, _)| addr.trim().to_string())
        .filter(|a| !a.is_empty()))
}
