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

/// The records in force and the fast path's table built from them, swapped whole together.
#[derive(Clone)]
pub struct Shared(Arc<Inner>);

struct Inner {
    now: RwLock<(Arc<Records>, Arc<Table>)>,
    /// Bumped on every swap: a UDP loop keeps its own `Arc` of the table and takes the lock
    /// only when this moved (one atomic load per batch of queries, no lock).
    generation: AtomicU64,
}

impl Shared {
    pub fn new(r: Records) -> Shared {
        let t = Table::build(&r);
        Shared(Arc::new(Inner {
            now: RwLock::new((Arc::new(r), Arc::new(t))),
            generation: AtomicU64::new(0),
        }))
    }

    pub fn get(&self) -> Arc<Records> {
        self.0
            .now
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// The fast path's table and the generation it belongs to.
    pub fn table(&self) -> (u64, Arc<Table>) {
        let now = self.0.now.read().unwrap_or_else(|p| p.into_inner());
        (self.generation(), now.1.clone())
    }

    /// Moves on every swap.
    pub fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::Acquire)
    }

    /// Swap in `r`, building its table here (see [`Shared::set_built`] to build it elsewhere).
    pub fn set(&self, r: Records) {
        let t = Table::build(&r);
        self.set_built(r, t);
    }

    /// Swap in `r` and its table `t` (built by [`Table::build`] from `r`).
    pub fn set_built(&self, r: Records, t: Table) {
        let mut now = self.0.now.write().unwrap_or_else(|p| p.into_inner());
        *now = (Arc::new(r), Arc::new(t));
        self.0.generation.fetch_add(1, Ordering::AcqRel);
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
