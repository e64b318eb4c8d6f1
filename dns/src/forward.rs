//! Names that are not knit's, asked by a requester on a knit network, go to the upstream
//! resolvers (the host's, from `/etc/resolv.conf`, unless given), and their answers are cached
//! for their TTL (negative answers for the SOA's minimum, at most [`NEGATIVE_TTL`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};
use tokio::net::UdpSocket;

/// The longest a negative answer is cached.
pub const NEGATIVE_TTL: u32 = 30;
/// The longest any answer is cached.
pub const MAX_TTL: u32 = 300;
/// How long one upstream gets before the next is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Entries kept at most (the cache is cleared when it would grow past this).
const MAX_ENTRIES: usize = 10_000;

/// What an upstream answered, as cached.
#[derive(Debug, Clone)]
pub struct Cached {
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    stored: Instant,
    ttl: u32,
}

impl Cached {
    /// The records with their TTLs counted down by the time spent in the cache.
    pub fn aged(&self) -> Cached {
        let spent = self.stored.elapsed().as_secs() as u32;
        let age = |rs: &[Record]| {
            rs.iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.ttl = r.ttl.saturating_sub(spent);
                    r
                })
                .collect()
        };
        Cached {
            code: self.code,
            answers: age(&self.answers),
            authorities: age(&self.authorities),
            stored: self.stored,
            ttl: self.ttl,
        }
    }
}

/// The upstreams and the cache.
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    cache: Mutex<HashMap<(Name, RecordType), Cached>>,
}

/// The nameservers of a resolv.conf text, port 53.
pub fn resolv_conf_servers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next())
                .flatten()
                .and_then(|a| a.split('%').next())
                .and_then(|a| a.parse::<IpAddr>().ok())
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The upstreams to forward to: none with `no_forward`, else those `given`, else the
/// nameservers of the host's `/etc/resolv.conf`.
pub fn upstreams(no_forward: bool, given: &[SocketAddr]) -> Vec<SocketAddr> {
    if no_forward {
        Vec::new()
    } else if given.is_empty() {
        resolv_conf_servers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
    } else {
        given.to_vec()
    }
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>) -> Forwarder {
        Forwarder {
            upstreams,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }

    fn cached(&self, key: &(Name, RecordType)) -> Option<Cached> {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match c.get(key) {
            Some(e) if e.stored.elapsed() < Duration::from_secs(u64::from(e.ttl)) => Some(e.aged()),
            Some(_) => {
                c.remove(key);
                None
            }
            None => None,
        }
    }

    fn store(&self, key: (Name, RecordType), m: &Message) {
        let ttl = if m.answers.is_empty() {
            m.authorities
                .iter()
                .map(|r| r.ttl)
                .min()
                .unwrap_or(NEGATIVE_TTL)
                .min(NEGATIVE_TTL)
        } else {
            m.answers
                .iter()
                .map(|r| r.ttl)
                .min()
                .unwrap_or(0)
                .min(MAX_TTL)
        };
        if ttl == 0
            || !matches!(
                m.metadata.response_code,
                ResponseCode::NoError | ResponseCode::NXDomain
            )
        {
            return;
        }
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() >= MAX_ENTRIES {
            c.clear();
        }
        c.insert(
            key,
            Cached {
                code: m.metadata.response_code,
                answers: m.answers.clone(),
                authorities: m.authorities.clone(),
                stored: Instant::now(),
                ttl,
            },
        );
    }

    /// The answer for `query` (the requester's raw message): from the cache, else from the
    /// first upstream that answers. `None` when none did.
    pub async fn resolve(&self, name: &Name, qtype: RecordType, query: &[u8]) -> Option<Cached> {
        let key = (name.to_lowercase(), qtype);
        if let Some(c) = self.cached(&key) {
            return Some(c);
        }
        for up in &self.upstreams {
            let Ok(m) = ask(*up, query).await else {
                continue;
            };
            self.store(key.clone(), &m);
            return Some(Cached {
                code: m.metadata.response_code,
                answers: m.answers,
                authorities: m.authorities,
                stored: Instant::now(),
                ttl: 0,
            });
        }
        None
    }
}

/// One UDP exchange with an upstream (the requester's message as is: same id and question).
async fn ask(up: SocketAddr, query: &[u8]) -> std::io::Result<Message> {
    let bind: SocketAddr = if up.is_ipv4() {
        SocketAddr::from(([0u8; 4], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let s = UdpSocket::bind(bind).await?;
    s.connect(up).await?;
    s.send(query).await?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(UPSTREAM_TIMEOUT, s.recv(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "upstream timed out"))??;
    Message::from_vec(&buf[..n])
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let t =
            "# comment\nsearch x\nnameserver 10.0.2.3\nnameserver fe80::1%eth0\nnameserver bad\n";
        let s = resolv_conf_servers(t);
        assert_eq!(
            s,
            vec![
                "10.0.2.3:53".parse::<SocketAddr>().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }
}
