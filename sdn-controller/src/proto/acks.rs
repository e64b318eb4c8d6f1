//! An agent's acknowledgements: when they go (see the protocol's step 3).

/// An agent acknowledges its deltas together, [`ack_delay`] after the first one it has not
/// acknowledged yet (a Full at once). Acks only feed the controller's lag gauge: one per
/// change per host would double the packets of a change that reaches every host and compete
/// with its sending, and a fixed delay would bring every host's ack back at one moment.
pub const ACK_DELAY: std::time::Duration = std::time::Duration::from_secs(2);
/// How far past [`ACK_DELAY`] an ack may go (spread at random over the agents).
pub const ACK_SPREAD: std::time::Duration = std::time::Duration::from_secs(3);

/// When to acknowledge a delta just applied: [`ACK_DELAY`] plus a random part of
/// [`ACK_SPREAD`].
pub fn ack_delay() -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    // A randomly keyed hasher: random enough to spread acks, no dependency.
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let spread = ACK_SPREAD.as_micros() as u64;
    ACK_DELAY + std::time::Duration::from_micros(r % spread.max(1))
}

/// An agent's acks: a Full is acknowledged at once (by the caller, after [`Acks::clear`]),
/// deltas together [`ack_delay`] after the first one not yet acknowledged. One timer, armed
/// once per ack, not once per delta.
#[derive(Debug)]
pub struct Acks {
    pending: Option<u64>,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Default for Acks {
    fn default() -> Acks {
        Acks {
            pending: None,
            timer: Box::pin(tokio::time::sleep(std::time::Duration::ZERO)),
        }
    }
}

impl Acks {
    /// A delta applied: `version` goes with the next ack.
    pub fn applied(&mut self, version: u64) {
        if self.pending.is_none() {
            let at = tokio::time::Instant::now() + ack_delay();
            self.timer.as_mut().reset(at);
        }
        self.pending = Some(version);
    }

    /// Nothing to acknowledge any more (a Full was, at once).
    pub fn clear(&mut self) {
        self.pending = None;
    }

    /// The version to acknowledge, when its time comes (never while none is pending).
    /// Cancel-safe: the version is taken only when it is returned.
    pub async fn due(&mut self) -> u64 {
        if self.pending.is_none() {
            std::future::pending::<()>().await;
        }
        self.timer.as_mut().await;
        self.pending.take().unwrap_or_default()
    }
}
