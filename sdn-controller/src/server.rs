//! Serving agents on `--listen`: every replica accepts; a standby answers `NotLeader` with
//! the leader's address, the leader streams (see [`crate::proto`] for the conversation).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info};

use crate::controller::Shared;
use crate::hub::CatchUp;
use crate::metrics::HostLabel;
use crate::proto::{
    read_frame, split_full, write_delta, write_frame, AgentMsg, ControllerMsg, ProtoError,
    PART_ITEMS, PROTOCOL,
};

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

/// Decrements the connected gauge and drops the host's lag series when the connection ends.
struct Connected<'a> {
    shared: &'a Shared,
    host: String,
}

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.shared.metrics.agents.dec();
        self.shared.metrics.lag.remove(&HostLabel {
            host: self.host.clone(),
        });
    }
}

async fn connection(conn: TcpStream, shared: &Shared) -> Result<(), ProtoError> {
    let _ = conn.set_nodelay(true);
    let (rd, mut wr) = conn.into_split();
    // Buffered: a frame's length and body in one read.
    let mut rd = tokio::io::BufReader::new(rd);
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, read_frame::<_, AgentMsg>(&mut rd)).await
    {
        Ok(Ok(Some(m))) => m,
        Ok(Ok(None)) | Err(_) => return Ok(()),
        Ok(Err(e)) => return Err(e),
    };
    let (host, mut have) = match hello {
        AgentMsg::Hello {
            protocol,
            host,
            version,
        } if protocol == PROTOCOL => (host, version),
        AgentMsg::Hello { protocol, .. } => {
            let message = format!("protocol {protocol} is not {PROTOCOL}");
            return write_frame(&mut wr, &ControllerMsg::Error { message }).await;
        }
        AgentMsg::Ack { .. } => {
            let message = "expected hello first".to_string();
            return write_frame(&mut wr, &ControllerMsg::Error { message }).await;
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
    let Some(mut stream_rx) = subscribed else {
        let msg = ControllerMsg::NotLeader {
            leader: role.leader.clone(),
        };
        return write_frame(&mut wr, &msg).await;
    };
    info!(%host, version = ?have, "agent connected");
    shared.metrics.agents.inc();
    let _connected = Connected {
        shared,
        host: host.clone(),
    };
    // Acks are read and counted on their own task (a read is not cancel-safe inside select!),
    // which sets the host's lag itself: the stream's version is what its watch last said, so
    // an ack takes no hub lock and wakes nothing else (a change on a wide network is acked by
    // every host at once).
    let lag = shared
        .metrics
        .lag
        .get_or_create(&HostLabel { host: host.clone() })
        .clone();
    let stream_now = stream_rx.clone();
    let reader = tokio::spawn(async move {
        while let Ok(Some(AgentMsg::Ack { version })) = read_frame::<_, AgentMsg>(&mut rd).await {
            let now = *stream_now.borrow();
            lag.set(i64::try_from(now.max(version) - version).unwrap_or(i64::MAX));
        }
    });
    // Ends when the agent closes (or sends anything but an ack).
    let mut reader = AbortOnDrop(reader);
    loop {
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
                    write_delta(&mut wr, d.base, d.version, &d.changes.json).await?;
                    shared.metrics.deltas.inc();
                }
            }
            CatchUp::Full(ControllerMsg::Full { version, state }) => {
                have = Some(version);
                let mut parts = split_full(state, PART_ITEMS);
                if parts.len() == 1 {
                    let state = parts.remove(0);
                    write_frame(&mut wr, &ControllerMsg::Full { version, state }).await?;
                } else {
                    let n = parts.len();
                    for (i, state) in parts.into_iter().enumerate() {
                        let last = i + 1 == n;
                        let part = ControllerMsg::FullPart {
                            version,
                            state,
                            last,
                        };
                        write_frame(&mut wr, &part).await?;
                    }
                }
                shared.metrics.fulls.inc();
            }
            CatchUp::Full(other) => write_frame(&mut wr, &other).await?,
        }
        tokio::select! {
            r = stream_rx.changed() => if r.is_err() { return Ok(()) },
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

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
