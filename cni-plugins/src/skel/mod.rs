//! The CNI skeleton every plugin runs under: read `CNI_*` from the environment and the network
//! configuration from stdin, validate them, call the plugin's verb, and print exactly one thing
//! on stdout: the result, or the spec's error object. Errors are mapped to spec codes here and
//! nowhere else (1 incompatible version, 2 unsupported field, 3 unknown container, 4 invalid
//! environment, 5 I/O, 6 decode, 7 invalid config, 11 try again later, 50/51 for STATUS, 999
//! only for bugs).

use std::fmt::Display;
use std::io::{Read, Write};
use std::path::PathBuf;

use libnet::nft::Nft;
use libnet::{HasKind, Kind, StateRoot};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::durable::Deferred;
use crate::types::{version_at_least, CniResult, Dns, SUPPORTED_VERSIONS};

pub const ERR_INCOMPATIBLE_VERSION: u32 = 1;
pub const ERR_UNSUPPORTED_FIELD: u32 = 2;
pub const ERR_UNKNOWN_CONTAINER: u32 = 3;
pub const ERR_INVALID_ENV: u32 = 4;
pub const ERR_IO: u32 = 5;
pub const ERR_DECODE: u32 = 6;
pub const ERR_INVALID_CONFIG: u32 = 7;
pub const ERR_TRY_AGAIN: u32 = 11;
pub const ERR_NOT_AVAILABLE: u32 = 50;
pub const ERR_LIMITED: u32 = 51;
pub const ERR_INTERNAL: u32 = 999;

/// Test hook: `KNIT_STATE_DIR=D` puts knit's state under `D` instead of
/// [`libnet::DEFAULT_STATE_ROOT`]. Read here, once per call, and passed down as a value.
pub const STATE_DIR_ENV: &str = "KNIT_STATE_DIR";

/// The spec's error object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    pub fn config(msg: impl Into<String>) -> CniError {
        CniError::new(ERR_INVALID_CONFIG, msg)
    }

    /// Map an error of libnet to its spec code by its kind.
    pub fn from_kind(kind: Kind, err: impl Display) -> CniError {
        let code = match kind {
            Kind::Invalid | Kind::Exists => ERR_INVALID_CONFIG,
            Kind::NotFound => ERR_UNKNOWN_CONTAINER,
            Kind::Busy | Kind::Transient => ERR_TRY_AGAIN,
            Kind::Internal => ERR_INTERNAL,
        };
        CniError::new(code, err.to_string())
    }

    pub fn to_json(&self, version: &str) -> Value {
        let mut v = json!({"cniVersion": version, "code": self.code, "msg": self.msg});
        if !self.details.is_empty() {
            v["details"] = json!(self.details);
        }
        v
    }
}

impl Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)
    }
}

impl std::error::Error for CniError {}

/// So that a CNI error (an IPAM plugin's, say) can travel through libnet's endpoint lifecycle
/// and come out unchanged.
impl HasKind for CniError {
    fn kind(&self) -> Kind {
        match self.code {
            ERR_UNKNOWN_CONTAINER => Kind::NotFound,
            ERR_TRY_AGAIN => Kind::Transient,
            ERR_INTERNAL => Kind::Internal,
            _ => Kind::Invalid,
        }
    }
}

impl From<libnet::endpoint::EndpointError> for CniError {
    /// A CNI error that travelled through the lifecycle keeps its code; when the lifecycle added
    /// to it (a step's name, what a rollback could not undo), the message says so too.
    fn from(e: libnet::endpoint::EndpointError) -> CniError {
        use libnet::endpoint::Step;
        let Some(c) = e.cause::<CniError>() else {
            return CniError::from_kind(e.kind(), e);
        };
        let mut msg = match e.step {
            Step::Allocate | Step::Wire => c.msg.clone(),
            step => format!("{step}: {}", c.msg),
        };
        for u in &e.undo_failures {
            msg.push_str(&format!("; rolling back, {u}"));
        }
        CniError {
            code: c.code,
            msg,
            details: c.details.clone(),
        }
    }
}

impl From<libnet::endpoint::DetachError> for CniError {
    /// The first failure's code; every failure in the message.
    fn from(e: libnet::endpoint::DetachError) -> CniError {
        let msg = e.to_string();
        let mut errors = e.errors.into_iter();
        match errors.next() {
            Some(first) => CniError {
                msg,
                ..CniError::from(first)
            },
            None => CniError::new(ERR_INTERNAL, "detach failed without an error"),
        }
    }
}

/// `result.cni()?`: turn any libnet error into a spec error by its kind.
pub trait OrCni<T> {
    fn cni(self) -> Result<T, CniError>;
    /// Like `cni`, prefixing the message with what was being done.
    fn cni_ctx(self, what: &str) -> Result<T, CniError>;
}

impl<T, E: HasKind + Display> OrCni<T> for Result<T, E> {
    fn cni(self) -> Result<T, CniError> {
        self.map_err(|e| CniError::from_kind(e.kind(), &e))
    }
    fn cni_ctx(self, what: &str) -> Result<T, CniError> {
        self.map_err(|e| CniError::from_kind(e.kind(), format!("{what}: {e}")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }
}

/// The fields every network configuration has; each plugin parses its own from `raw`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: Value,
    #[serde(default)]
    pub args: Value,
    #[serde(default)]
    pub dns: Dns,
    #[serde(default)]
    pub ipam: Value,
}

/// One invocation: environment, the raw stdin and the parsed common configuration.
#[derive(Debug, Clone)]
pub struct Args {
    pub command: Command,
    pub container_id: String,
    /// `CNI_NETNS`; empty on a DEL whose namespace is already gone.
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub path: Vec<PathBuf>,
    /// `CNI_ARGS` as `K=V` pairs.
    pub cni_args: Vec<(String, String)>,
    pub stdin: Vec<u8>,
    pub raw: Value,
    pub conf: NetConf,
    /// What belongs to this call rather than to the process.
    pub ctx: Context,
}

/// Per-call values the plugins use instead of process-wide state or the environment.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Root of knit's state directories (nft records, host-device saves).
    pub state: StateRoot,
    /// Work the answer waits for (reservation fsyncs).
    pub deferred: Deferred,
}

impl Args {
    /// The previous plugin's result, required by chained plugins.
    pub fn prev_result(&self) -> Result<Option<CniResult>, CniError> {
        self.conf
            .prev_result
            .as_ref()
            .map(|v| {
                CniResult::from_value(v).map_err(|e| {
                    CniError::new(ERR_DECODE, format!("cannot decode prevResult: {e}"))
                })
            })
            .transpose()
    }

    /// The nftables layer with this call's state dir.
    pub fn nft(&self) -> Nft {
        Nft::at(self.ctx.state.nft())
    }

    /// The value of `CNI_ARGS` key `k`.
    pub fn cni_arg(&self, k: &str) -> Option<&str> {
        self.cni_args
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    /// Parse the plugin's own view of the configuration.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, CniError> {
        T::deserialize(&self.raw).map_err(|e| {
            CniError::new(
                ERR_DECODE,
                format!("cannot decode {} configuration: {e}", self.conf.plugin_type),
            )
        })
    }

    /// The valid attachments of a GC call (`cni.dev/valid-attachments`).
    pub fn valid_attachments(&self) -> Vec<(String, String)> {
        self.raw
            .get("cni.dev/valid-attachments")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| {
                        Some((
                            v.get("containerID")?.as_str()?.to_string(),
                            v.get("ifname")?.as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// What a plugin implements. Verbs a plugin has no work for keep the defaults.
pub trait Plugin: Sync {
    fn add(&self, a: &Args) -> Result<CniResult, CniError>;
    fn del(&self, a: &Args) -> Result<(), CniError>;
    fn check(&self, a: &Args) -> Result<(), CniError>;
    fn status(&self, _a: &Args) -> Result<(), CniError> {
        Ok(())
    }
    fn gc(&self, _a: &Args) -> Result<(), CniError> {
        Ok(())
    }
}

/// Where the environment comes from: the process in production, a map in tests.
pub trait Env {
    fn get(&self, k: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, k: &str) -> Option<String> {
        std::env::var(k).ok()
    }
}

impl Env for &[(&str, &str)] {
    fn get(&self, k: &str) -> Option<String> {
        self.iter()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| v.to_string())
    }
}

/// Run a plugin like a CNI binary: returns the exit code; everything printed goes to `out`.
pub fn run(plugin: &dyn Plugin, env: &dyn Env, stdin: &mut dyn Read, out: &mut dyn Write) -> i32 {
    let (version, res) = match parse(env, stdin) {
        Ok(args) if args.command == Command::Version => {
            let v = json!({"cniVersion": "1.1.0", "supportedVersions": SUPPORTED_VERSIONS});
            let _ = writeln!(out, "{v}");
            return 0;
        }
        Ok(args) => {
            let version = args.conf.cni_version.clone();
            let res = dispatch(plugin, &args);
            // Nothing is answered before this call's deferred work (fsyncs) is done.
            let res = args.ctx.deferred.wait_all().and(res);
            (version, res)
        }
        Err((version, e)) => (version, Err(e)),
    };
    match res {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
            0
        }
        Ok(None) => 0,
        Err(e) => {
            let version = if version.is_empty() {
                "1.1.0"
            } else {
                &version
            };
            let _ = writeln!(out, "{}", e.to_json(version));
            1
        }
    }
}

fn dispatch(plugin: &dyn Plugin, a: &Args) -> Result<Option<Value>, CniError> {
    let v = a.conf.cni_version.as_str();
    let need = |min: &str, verb: &str| {
        if version_at_least(v, min) {
            Ok(())
        } else {
            Err(CniError::new(
                ERR_INCOMPATIBLE_VERSION,
                format!("config version {v} does not allow {verb}"),
            ))
        }
    };
    match a.command {
        Command::Add => plugin.add(a).map(|r| Some(r.to_version(v))),
        Command::Del => plugin.del(a).map(|()| None),
        Command::Check => {
            need("0.4.0", "CHECK")?;
            plugin.check(a).map(|()| None)
        }
        Command::Status => {
            need("1.1.0", "STATUS")?;
            plugin.status(a).map(|()| None)
        }
        Command::Gc => {
            need("1.1.0", "GC")?;
            plugin.gc(a).map(|()| None)
        }
        // Answered by `run` before dispatch; an error rather than an abort all the same.
        Command::Version => Err(CniError::new(
            ERR_INTERNAL,
            "VERSION reached the plugin dispatch",
        )),
    }
}

type ParseErr = (String, CniError);

fn parse(env: &dyn Env, stdin: &mut dyn Read) -> Result<Args, ParseErr> {
    let bare = |e: CniError| (String::new(), e);
    let cmd = env
        .get("CNI_COMMAND")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bare(CniError::new(ERR_INVALID_ENV, "CNI_COMMAND is not set")))?;
    let command = Command::parse(&cmd).ok_or_else(|| {
        bare(CniError::new(
            ERR_INVALID_ENV,
            format!("unknown CNI_COMMAND {cmd:?}"),
        ))
    })?;
    let mut stdin_bytes = Vec::new();
    if command != Command::Version {
        stdin
            .read_to_end(&mut stdin_bytes)
            .map_err(|e| bare(CniError::new(ERR_IO, format!("reading stdin: {e}"))))?;
    }
    let mut args = Args {
        command,
        container_id: env.get("CNI_CONTAINERID").unwrap_or_default(),
        netns: env
            .get("CNI_NETNS")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
        ifname: env.get("CNI_IFNAME").unwrap_or_default(),
        path: env
            .get("CNI_PATH")
            .map(|p| {
                p.split(':')
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default(),
        cni_args: Vec::new(),
        stdin: stdin_bytes,
        raw: Value::Null,
        conf: NetConf::default(),
        ctx: Context {
            state: env
                .get(STATE_DIR_ENV)
                .filter(|d| !d.is_empty())
                .map(StateRoot::new)
                .unwrap_or_default(),
            deferred: Deferred::default(),
        },
    };
    if command == Command::Version {
        return Ok(args);
    }
    args.raw = serde_json::from_slice(&args.stdin).map_err(|e| {
        bare(CniError::new(
            ERR_DECODE,
            format!("cannot decode network configuration: {e}"),
        ))
    })?;
    if !args.raw.is_object() {
        return Err(bare(CniError::new(
            ERR_DECODE,
            "network configuration is not a JSON object",
        )));
    }
    args.conf = NetConf::deserialize(&args.raw).map_err(|e| {
        bare(CniError::new(
            ERR_DECODE,
            format!("cannot decode network configuration: {e}"),
        ))
    })?;
    let version = args.conf.cni_version.clone();
    let fail = |e: CniError| (version.clone(), e);
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        let shown = if version.is_empty() {
            "(none)"
        } else {
            &version
        };
        return Err(fail(
            CniError::new(ERR_INCOMPATIBLE_VERSION, "incompatible CNI versions").with_details(
                format!("config is {shown:?}, plugin supports {SUPPORTED_VERSIONS:?}"),
            ),
        ));
    }
    validate_network_name(&args.conf.name).map_err(fail)?;
    validate_env(&args).map_err(fail)?;
    args.cni_args = parse_cni_args(&env.get("CNI_ARGS").unwrap_or_default()).map_err(fail)?;
    Ok(args)
}

fn validate_env(a: &Args) -> Result<(), CniError> {
    let per_attachment = matches!(a.command, Command::Add | Command::Del | Command::Check);
    if !per_attachment {
        return Ok(());
    }
    let missing = |k: &str| CniError::new(ERR_INVALID_ENV, format!("{k} is not set"));
    if a.container_id.is_empty() {
        return Err(missing("CNI_CONTAINERID"));
    }
    validate_container_id(&a.container_id)?;
    if a.ifname.is_empty() {
        return Err(missing("CNI_IFNAME"));
    }
    validate_ifname(&a.ifname)?;
    if a.netns.is_none() && a.command != Command::Del {
        return Err(missing("CNI_NETNS"));
    }
    Ok(())
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`, as libcni requires: a name becomes a directory and part of
/// rule identities, so anything that could escape a path is refused.
pub fn validate_network_name(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(CniError::config("missing network name"));
    }
    if !is_identifier(name) {
        return Err(CniError::config(format!(
            "invalid network name {name:?}: must start with a letter or digit and hold only letters, digits, '_', '.', '-'"
        )));
    }
    Ok(())
}

fn validate_container_id(id: &str) -> Result<(), CniError> {
    if !is_identifier(id) {
        return Err(CniError::new(
            ERR_INVALID_ENV,
            format!("invalid CNI_CONTAINERID {id:?}: must start with a letter or digit and hold only letters, digits, '_', '.', '-'"),
        ));
    }
    Ok(())
}

fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// What the kernel accepts as an interface name: 1..15 bytes, no '/', ':' or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let bad = |why: &str| {
        Err(CniError::new(
            ERR_INVALID_ENV,
            format!("invalid CNI_IFNAME {name:?}: {why}"),
        ))
    };
    if name.len() > libnet::netlink::link::IFNAME_MAX {
        return bad("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("not a valid interface name");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
    {
        return bad("contains '/', ':' or whitespace");
    }
    Ok(())
}

/// `CNI_ARGS`: `K1=V1;K2=V2`.
fn parse_cni_args(s: &str) -> Result<Vec<(String, String)>, CniError> {
    s.split(';')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(CniError::new(
                ERR_INVALID_ENV,
                format!("invalid CNI_ARGS pair {pair:?}: expected KEY=VALUE"),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests;
