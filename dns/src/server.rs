//! The network half: hickory-server's listeners over knit's [`Records`], which a watcher
//! rebuilds from the store whenever its revision moves and swaps in whole (the lookup never
//! sees half an update, and nothing restarts).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo, Server};
use hickory_server::zone_handler::MessageResponseBuilder;
use tracing::{debug, warn};

use crate::forward::Forwarder;
use crate::records::{Outcome, Records};

/// The records in force, swapped whole.
#[derive(Clone)]
pub struct Shared(Arc<RwLock<Arc<Records>>>);

impl Shared {
    pub fn new(r: Records) -> Shared {
        Shared(Arc::new(RwLock::new(Arc::new(r))))
    }

    pub fn get(&self) -> Arc<Records> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, r: Records) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(r);
    }
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
        let builder = MessageResponseBuilder::from_message_request(request);
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
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.recursion_available = false;
        let sent = match &outcome {
            Outcome::Answer(rs) => {
                meta.authoritative = true;
                let msg = builder.build(
                    meta,
                    rs.iter(),
                    std::iter::empty(),
                    std::iter::empty(),
                    std::iter::empty(),
                );
                response.send_response(msg).await
            }
            Outcome::NoData | Outcome::NxDomain => {
                meta.authoritative = true;
                if outcome == Outcome::NxDomain {
                    meta.response_code = ResponseCode::NXDomain;
                }
                response.send_response(builder.build_no_records(meta)).await
            }
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
            // A requester outside knit's networks, or no upstream: no answer of ours.
            Outcome::Refused | Outcome::Forward => {
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
    let mut server = Server::new(Handler { records, forward });
    for addr in listen {
        let udp = tokio::net::UdpSocket::bind(addr).await?;
        server.register_socket(udp);
        let tcp = tokio::net::TcpListener::bind(addr).await?;
        server.register_listener(tcp, Duration::from_secs(5), 64 * 1024);
    }
    server
        .block_until_done()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
}
