//! `knit`: the overlay networks of a knit cluster, through this host's agent. A thin client:
//! every verb goes to the agent's local API socket (`POST /v1/cni/{add,del,check,gc,status}`,
//! HTTP/1.1 over the unix socket, written by hand so this binary links no HTTP stack) with
//! the call's environment and configuration; the agent does the work (address from this
//! host's block, the veth on the network's bridge, the endpoint record in etcd) and answers
//! the CNI result or the CNI error object, printed as is.
//!
//! ```json
//! {"cniVersion": "1.0.0", "name": "ov", "type": "knit", "network": "ov",
//!  "socket": "/run/knit/agent.sock"}
//! ```
//! `network` is the knit network's name (default: `name`); `socket` is optional.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::skel::{
    Args, CniError, Command, Plugin, ERR_DECODE, ERR_INTERNAL, ERR_IO, ERR_NOT_AVAILABLE,
    ERR_TRY_AGAIN,
};
use crate::types::CniResult;

/// Where the agent serves its local API unless `socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/knit/agent.sock";
/// An ADD may wait for a block from etcd and the kernel; generous, but never forever.
const TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer read (a result is a few hundred bytes).
const MAX_ANSWER: u64 = 1 << 20;

pub struct Knit;

#[derive(Debug, Deserialize)]
struct Conf {
    #[serde(default)]
    network: String,
    #[serde(default)]
    socket: String,
}

impl Plugin for Knit {
    fn add(&self, a: &Args) -> Result<CniResult, CniError> {
        let v = forward(a, "add")?;
        CniResult::from_value(&v)
            .map_err(|e| CniError::new(ERR_DECODE, format!("the knit agent's ADD result: {e}")))
    }
    fn del(&self, a: &Args) -> Result<(), CniError> {
        forward(a, "del").map(|_| ())
    }
    fn check(&self, a: &Args) -> Result<(), CniError> {
        forward(a, "check").map(|_| ())
    }
    fn gc(&self, a: &Args) -> Result<(), CniError> {
        forward(a, "gc").map(|_| ())
    }
    fn status(&self, a: &Args) -> Result<(), CniError> {
        forward(a, "status").map(|_| ())
    }
}

/// The request body the agent reads (`knit/src/agent/cni.rs`).
fn request(a: &Args, network: &str) -> Value {
    let command = match a.command {
        Command::Add => "ADD",
        Command::Del => "DEL",
        Command::Check => "CHECK",
        Command::Gc => "GC",
        Command::Status => "STATUS",
        Command::Version => "VERSION",
    };
    json!({
        "command": command,
        "containerID": a.container_id,
        "netns": a.netns.as_ref().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default(),
        "ifname": a.ifname,
        "args": a.cni_args,
        "network": network,
        "config": a.raw,
    })
}

fn forward(a: &Args, verb: &str) -> Result<Value, CniError> {
    let conf: Conf = a.parse()?;
    let network = if conf.network.is_empty() {
        a.conf.name.clone()
    } else {
        conf.network
    };
    let socket = if conf.socket.is_empty() {
        DEFAULT_SOCKET.to_string()
    } else {
        conf.socket
    };
    let body = request(a, &network).to_string();
    let (status, answer) = post(&socket, &format!("/v1/cni/{verb}"), &body)?;
    let v: Value = if answer.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&answer).map_err(|e| {
            CniError::new(
                ERR_DECODE,
                format!("the knit agent on {socket} answered {verb} with something other than JSON: {e}"),
            )
        })?
    };
    if status == 200 {
        return Ok(v);
    }
    // The agent's CNI error object, passed on unchanged.
    let code = v
        .get("code")
        .and_then(Value::as_u64)
        .unwrap_or(u64::from(ERR_INTERNAL));
    let msg = v
        .get("msg")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("the knit agent answered {verb} with HTTP {status}"));
    let mut e = CniError::new(u32::try_from(code).unwrap_or(ERR_INTERNAL), msg);
    if let Some(d) = v.get("details").and_then(Value::as_str) {
        e = e.with_details(d);
    }
    Err(e)
}

/// One `POST` over the unix socket; the status and the body.
fn post(socket: &str, path: &str, body: &str) -> Result<(u16, Vec<u8>), CniError> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        CniError::new(
            ERR_NOT_AVAILABLE,
            format!("the knit agent is not reachable on {socket}: {e} (is `knit agent --etcd ...` running?)"),
        )
    })?;
    let io = |e: std::io::Error| {
        CniError::new(
            ERR_TRY_AGAIN,
            format!("talking to the knit agent on {socket}: {e}"),
        )
    };
    s.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: knit\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    s.take(MAX_ANSWER).read_to_end(&mut raw).map_err(io)?;
    parse_response(&raw).ok_or_else(|| {
        CniError::new(
            ERR_IO,
            format!("the knit agent on {socket} sent an answer that is not HTTP/1.1"),
        )
    })
}

/// The status and body of an HTTP/1.1 answer (`Content-Length`, chunked, or to the end).
fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let body = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let mut length = None;
    let mut chunked = false;
    for l in lines {
        let (k, v) = l.split_once(':')?;
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "content-length" {
            length = Some(v.parse::<usize>().ok()?);
        } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else {
        match length {
            Some(n) => body.get(..n)?.to_vec(),
            None => body.to_vec(),
        }
    };
    Some((status, body))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::shared::tests::call;

    #[test]
    fn answers_are_read_with_a_length_chunked_or_to_the_end() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}xx";
        assert_eq!(parse_response(r), Some((200, b"{}".to_vec())));
        let r = b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(r), Some((400, b"{\"a\":1}".to_vec())));
        let r = b"HTTP/1.1 200 OK\r\n\r\nabc";
        assert_eq!(parse_response(r), Some((200, b"abc".to_vec())));
        assert_eq!(parse_response(b"garbage"), None);
    }

    #[test]
    fn an_agent_that_is_not_there_is_a_clear_error() {
        let conf = r#"{"cniVersion":"1.1.0","name":"ov","type":"knit","socket":"/nonexistent/knit-unit.sock"}"#;
        for verb in ["ADD", "DEL", "STATUS"] {
            let (code, out) = call(&Knit, verb, conf);
            assert_eq!((code, out["code"].as_u64()), (1, Some(50)), "{verb}: {out}");
            let msg = out["msg"].as_str().unwrap_or_default();
            assert!(msg.contains("/nonexistent/knit-unit.sock"), "{msg}");
        }
    }

    #[test]
    fn the_request_carries_the_call_and_the_network() {
        let a = crate::plugins::shared::tests::args(
            "ADD",
            r#"{"cniVersion":"1.0.0","name":"ov","type":"knit"}"#,
        );
        let v = request(&a, "ov");
        assert_eq!(v["command"], "ADD");
        assert_eq!(v["containerID"], "c1");
        assert_eq!(v["ifname"], "eth0");
        assert_eq!(v["network"], "ov");
        assert_eq!(v["config"]["type"], "knit");
    }
}
