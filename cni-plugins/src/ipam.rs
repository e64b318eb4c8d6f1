//! Delegation to the IPAM plugin named by `ipam.type`, as the reference's `ipam.ExecAdd` does:
//! the same configuration on stdin and the same environment with the verb set. knit's own IPAM
//! types (`host-local`, `static`) run in-process instead of as a second process: a CNI ADD is
//! mostly process start-up, and the on-disk state is the same either way.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command as Proc, Stdio};

use serde_json::Value;

use crate::skel::{Args, CniError, Command, ERR_INVALID_CONFIG, ERR_IO, ERR_UNKNOWN_CONTAINER};
use crate::types::CniResult;

/// The configured IPAM type; empty when the network has no IPAM (layer 2 only).
pub fn ipam_type(a: &Args) -> &str {
    a.conf
        .ipam
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub fn add(a: &Args) -> Result<CniResult, CniError> {
    match crate::plugins::in_process_ipam(ipam_type(a)) {
        Some(p) => p.add(a),
        None => exec(a, Command::Add)?.ok_or_else(|| {
            CniError::new(
                ERR_IO,
                format!("IPAM plugin {:?} returned no result", ipam_type(a)),
            )
        }),
    }
}

pub fn del(a: &Args) -> Result<(), CniError> {
    match crate::plugins::in_process_ipam(ipam_type(a)) {
        Some(p) => p.del(a),
        None => exec(a, Command::Del).map(|_| ()),
    }
}

pub fn check(a: &Args) -> Result<(), CniError> {
    match crate::plugins::in_process_ipam(ipam_type(a)) {
        Some(p) => p.check(a),
        None => exec(a, Command::Check).map(|_| ()),
    }
}

pub fn gc(a: &Args) -> Result<(), CniError> {
    match crate::plugins::in_process_ipam(ipam_type(a)) {
        Some(p) => p.gc(a),
        None => exec(a, Command::Gc).map(|_| ()),
    }
}

fn verb(c: Command) -> &'static str {
    match c {
        Command::Add => "ADD",
        Command::Del => "DEL",
        Command::Check => "CHECK",
        Command::Version => "VERSION",
        Command::Status => "STATUS",
        Command::Gc => "GC",
    }
}

/// Find `ty` in `CNI_PATH`.
fn find_plugin(a: &Args, ty: &str) -> Result<PathBuf, CniError> {
    if ty.is_empty() || ty.contains('/') || ty == "." || ty == ".." {
        return Err(CniError::new(
            ERR_INVALID_CONFIG,
            format!("invalid IPAM plugin type {ty:?}"),
        ));
    }
    a.path
        .iter()
        .map(|d| d.join(ty))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                ERR_UNKNOWN_CONTAINER,
                format!("failed to find plugin {ty:?} in path {:?}", a.path),
            )
        })
}

/// Run the IPAM plugin as a process; its error object is passed on unchanged.
fn exec(a: &Args, c: Command) -> Result<Option<CniResult>, CniError> {
    let bin = find_plugin(a, ipam_type(a))?;
    let mut child = Proc::new(&bin)
        .env("CNI_COMMAND", verb(c))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| CniError::new(ERR_IO, format!("running {}: {e}", bin.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&a.stdin)
            .map_err(|e| CniError::new(ERR_IO, format!("writing to {}: {e}", bin.display())))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::new(ERR_IO, format!("waiting for {}: {e}", bin.display())))?;
    let v: Option<Value> = serde_json::from_slice(&out.stdout).ok();
    if !out.status.success() {
        let v = v.unwrap_or_default();
        let code = v.get("code").and_then(Value::as_u64).unwrap_or(999) as u32;
        let msg = v
            .get("msg")
            .and_then(Value::as_str)
            .unwrap_or("IPAM plugin failed");
        let details = v.get("details").and_then(Value::as_str).unwrap_or_default();
        return Err(CniError::new(code, msg).with_details(details));
    }
    match (c, v) {
        (Command::Add, Some(v)) => CniResult::from_value(&v).map(Some).map_err(|e| {
            CniError::new(
                crate::skel::ERR_DECODE,
                format!("cannot decode the IPAM result: {e}"),
            )
        }),
        _ => Ok(None),
    }
}
