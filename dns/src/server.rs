//! The network half: hickory-server's listeners over knit's [`Records`], which a watcher
//! rebuilds from the store whenever its revision moves and swaps in whole (the lookup never
//! sees half an update, and nothing restarts).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::Record;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo, Server};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use tracing::{debug, warn};

use crate::fast::Table;
use crate::forward::Forwarder;
use crate::records::{Outcome, Records};

/// The records in force and the fast path's table built from them. A change swaps in the
/// records with an empty table (every query then goes to the hickory handler, which answers
/// from the new records at once), and the table once built from those records: the table
/// never answers from records other than those in force.
#[derive(Clone)]
pub struct Shared(Arc<Inner>);

struct Inner {
    now: RwLock<Now>,
    /// Bumped on every swap: a UDP loop keeps its own `Arc` of the table and takes the lock
    /// only when this moved (one atomic load per batch of queries, no lock).
    generation: AtomicU64,
}

struct Now {
    records: Arc<Records>,
    table: Arc<Table>,
    /// The generation at which `records` came in.
    records_since: u64,
}

impl Shared {
    pub fn new(r: Records) -> Shared {
        let t = Table::build(&r);
        Shared(Arc::new(Inner {
            now: RwLock::new(Now {
                records: Arc::new(r),
                table: Arc::new(t),
                records_since: 0,
            }),
            generation: AtomicU64::new(0),
        }))
    }

    fn now(&self) -> std::sync::RwLockReadGuard<'_, Now> {
        self.0.now.read().unwrap_or_else(|p| p.into_inner())
    }

    fn now_mut(&self) -> std::sync::RwLockWriteGuard<'_, Now> {
        self.0.now.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self) -> Arc<Records> {
        self.now().records.clone()
    }

    /// The fast path's table and the generation it belongs to.
    pub fn table(&self) -> (u64, Arc<Table>) {
        let now = self.now();
        (self.generation(), now.table.clone())
    }

    /// Moves on every swap.
    pub fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::Acquire)
    }

    /// Swap in `r` and its table, built here.
    pub fn set(&self, r: Records) {
        let t = Table::build(&r);
        let mut now = self.now_mut();
        let g = self.0.generation.fetch_add(1, Ordering::AcqRel) + 1;
        *now = Now {
            records: Arc::new(r),
            table: Arc::new(t),
            records_since: g,
        };
    }

    /// Swap in `r` with an empty table; the records and their generation, for
    /// [`Shared::set_table`].
    pub fn set_records(&self, r: Records) -> (u64, Arc<Records>) {
        let r = Arc::new(r);
        let mut now = self.now_mut();
        let g = self.0.generation.fetch_add(1, Ordering::AcqRel) + 1;
        *now = Now {
            records: r.clone(),
            table: Arc::new(Table::default()),
            records_since: g,
        };
        (g, r)
    }

    /// Install `t`, built from the records swapped in at generation `g`, unless other records
    /// came in since (then false: their own table follows).
    pub fn set_table(&self, g: u64, t: Table) -> bool {
        let mut now = self.now_mut();
        if now.records_since != g {
            return false;
        }
        now.table = Arc::new(t);
        self.0.generation.fetch_add(1, Ordering::AcqRel);
        true
    }
}

/// The response to a query that `outcome` answers from knit's own records (records, NODATA,
/// NXDOMAIN; None for the others): what the handler sends, and what the fast path's table
/// holds, built by this one function.
#[allow(clippy::type_complexity)]
pub fn local_response<'q, 'a>(
    queries: &'q Queries,
    request: &Metadata,
    edns: Option<&'q Edns>,
    outcome: &'a Outcome,
) -> Option<
    MessageResponse<
        'q,
        'a,
        std::slice::Iter<'a, Record>,
        std::iter::Empty<&'a Record>,
        std::iter::Empty<&'a Record>,
        std::iter::Empty<&'a Record>,
    >,
> {
    let mut meta = Metadata::response_from_request(request);
    meta.recursion_available = false;
    meta.authoritative = true;
    let answers: &'a [Record] = match outcome {
        Outcome::Answer(rs) => rs,
        Outcome::NoData => &[],
        Outcome::NxDomain => {
            meta.response_code = ResponseCode::NXDomain;
            &[]
        }
        Outcome::Refused | Outcome::Forward => return None,
    };
    Some(MessageResponseBuilder::new(queries, edns).build(
        meta,
        answers.iter(),
        std::iter::empty(),
        std::iter::empty(),
        std::iter::empty(),
    ))
}

/// The EDNS of the response to a request that had EDNS (RFC 6891 6.1.1: a responder MUST
/// include one): version 0, the requester's payload size (at least 512), DO clear (knit signs
/// nothing). Err with it when the request's version is above 0 (BADVERS).
fn response_edns(request: &Request) -> Result<Option<Edns>, Edns> {
    let Some(req) = request.edns.as_ref() else {
        return Ok(None);
    };
    let mut e = Edns::new();
    e.set_max_payload(req.max_payload().max(512));
    e.set_version(0);
    if req.version() > 0 {
        return Err(e);
    }
    Ok(Some(e))
}

/// knit's request handler.
pub struct Handler {
    pub records: Shared,
    pub forward: Arc<Forwarder>,
}

fn failed(request: &Request, code: ResponseCode) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = code;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let edns = match response_edns(request) {
            Ok(e) => e,
            Err(e) => {
                let builder = MessageResponseBuilder::new(&request.queries, Some(&e));
                let msg = builder.error_msg(&request.metadata, ResponseCode::BADVERS);
                return response
                    .send_response(msg)
                    .await
                    .unwrap_or_else(|_| failed(request, ResponseCode::BADVERS));
            }
        };
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let info = match request.request_info() {
            Ok(i) if request.metadata.op_code == OpCode::Query => i,
            _ => {
                let code = if request.metadata.op_code == OpCode::Query {
                    ResponseCode::FormErr
                } else {
                    ResponseCode::NotImp
                };
                let msg = builder.error_msg(&request.metadata, code);
                return response
                    .send_response(msg)
                    .await
                    .unwrap_or_else(|_| failed(request, code));
            }
        };
        let records = self.records.get();
        let qname = info.query.original().name();
        let outcome = records.lookup(request.src().ip(), qname, info.query.query_type());
        debug!(src = %request.src(), %qname, ?outcome, "query");
        let local = local_response(&request.queries, &request.metadata, edns.as_ref(), &outcome);
        if let Some(msg) = local {
            return response.send_response(msg).await.unwrap_or_else(|e| {
                warn!(error = %e, "sending a DNS answer");
                failed(request, ResponseCode::ServFail)
            });
        }
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.recursion_available = false;
        let sent = match &outcome {
            Outcome::Forward if !self.forward.is_empty() => {
                let got = self
                    .forward
                    .resolve(qname, info.query.query_type(), request.as_slice())
                    .await;
                match got {
                    Some(c) => {
                        meta.recursion_available = true;
                        meta.response_code = c.code;
                        let msg = builder.build(
                            meta,
                            c.answers.iter(),
                            c.authorities.iter(),
                            std::iter::empty(),
                            std::iter::empty(),
                        );
                        response.send_response(msg).await
                    }
                    None => {
                        let msg = builder.error_msg(&request.metadata, ResponseCode::ServFail);
                        response.send_response(msg).await
                    }
                }
            }
            // A requester outside knit's networks, or no upstream: no answer of ours (the
            // local outcomes were answered above).
            _ => {
                let msg = builder.error_msg(&request.metadata, ResponseCode::Refused);
                response.send_response(msg).await
            }
        };
        sent.unwrap_or_else(|e| {
            warn!(error = %e, "sending a DNS answer");
            failed(request, ResponseCode::ServFail)
        })
    }
}

/// Serve `records` on UDP and TCP at every address of `listen` until the process ends,
/// forwarding names that are not knit's to `upstreams` (none: refused).
pub async fn serve(
    records: Shared,
    listen: &[SocketAddr],
    upstreams: Vec<SocketAddr>,
) -> std::io::Result<()> {
    let forward = Arc::new(Forwarder::new(upstreams));
    let handler = Arc::new(Handler {
        records: records.clone(),
        forward: forward.clone(),
    });
    let mut server = Server::new(Handler {
        records: records.clone(),
        forward,
    });
    let mut udp = tokio::task::JoinSet::new();
    for addr in listen {
        let sock = tokio::net::UdpSocket::bind(addr).await?;
        udp.spawn(crate::udp::serve(sock, records.clone(), handler.clone()));
        let tcp = tokio::net::TcpListener::bind(addr).await?;
        server.register_listener(tcp, Duration::from_secs(5), 64 * 1024);
    }
    tokio::select! {
        r = server.block_until_done() => r.map_err(|e| std::io::Error::other(e.to_string())),
        Some(r) = udp.join_next() => r.map_err(std::io::Error::other)?,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(name: &str) -> Records {
        let mut n = store::Network::new("front", store::Driver::Bridge);
        n.ipam
            .push(store::Pool::new("10.1.0.0/24".parse().unwrap()));
        let mut e = store::Endpoint::new(n.id.clone());
        e.name = name.into();
        e.ipv4 = Some("10.1.0.2/24".parse().unwrap());
        Records::build(crate::DEFAULT_DOMAIN, 5, &[(n, vec![e])])
    }

    #[test]
    fn a_table_comes_in_only_with_its_own_records() {
        let s = Shared::new(records("web"));
        let (g0, t0) = s.table();
        assert!(!t0.is_empty());
        // New records: no table until theirs is built; every swap moves the generation.
        let (g1, r1) = s.set_records(records("api"));
        assert!(g1 > g0 && s.table().1.is_empty());
        // A table built from records swapped out meanwhile is refused.
        let (g2, r2) = s.set_records(records("db"));
        assert!(!s.set_table(g1, Table::build(&r1)));
        assert!(s.table().1.is_empty());
        assert!(s.set_table(g2, Table::build(&r2)));
        let (g3, t3) = s.table();
        assert!(g3 > g2 && !t3.is_empty());
        assert_eq!(t3.len(), Table::build(&records("db")).len());
    }
}
