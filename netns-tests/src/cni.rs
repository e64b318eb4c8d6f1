//! A small libcni: runs a conflist's plugin chain as whole processes, like
//! containernetworking/cni `libcni` does, inside a test's "host" namespace.
//!
//! ADD walks the plugins in order, each getting `name` and `cniVersion` injected, the previous
//! plugin's result as `prevResult` and `runtimeConfig` filtered by its `capabilities`. DEL walks
//! in reverse with the cached final ADD result as `prevResult` (cniVersion >= 0.4.0), CHECK in
//! order with it. Every call records its wall time and the child's peak RSS (wait4).

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use libnet::netns::NetNs;
use serde_json::{json, Map, Value};

use crate::topology::enter_in_child;

/// What a runtime passes besides the config: CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS
/// and the capability arguments (`portMappings`, `ips`, `mac`, `bandwidth`, ...).
#[derive(Debug, Clone)]
pub struct Runtime {
    pub container_id: String,
    /// `None` (empty CNI_NETNS) when the container's namespace is already gone.
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: String,
    /// Capability name → value, e.g. `{"portMappings": [...]}`.
    pub capability_args: Map<String, Value>,
}

impl Runtime {
    pub fn new(container_id: &str, netns: Option<&Path>, ifname: &str) -> Runtime {
        Runtime {
            container_id: container_id.into(),
            netns: netns.map(Path::to_path_buf),
            ifname: ifname.into(),
            args: String::new(),
            capability_args: Map::new(),
        }
    }

    pub fn with_capability(mut self, name: &str, value: Value) -> Runtime {
        self.capability_args.insert(name.into(), value);
        self
    }
}

/// The spec's error object (`code`, `msg`, `details`) or a failure to run the plugin at all.
#[derive(Debug, Clone)]
pub struct CniError {
    pub code: u64,
    pub msg: String,
    pub details: String,
    /// The raw stdout (the error JSON, or whatever the plugin printed).
    pub stdout: String,
    pub stderr: String,
    pub status: Option<i32>,
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        if self.code == 0 {
            write!(
                f,
                " [exit {:?}, stdout {:?}, stderr {:?}]",
                self.status, self.stdout, self.stderr
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

/// One plugin process: what it was asked, what it said, how long it took.
#[derive(Debug, Clone)]
pub struct PluginCall {
    pub plugin: String,
    pub command: String,
    pub elapsed: Duration,
    /// Peak resident set of the plugin process, KiB (ru_maxrss of wait4).
    pub max_rss_kib: i64,
    pub outcome: std::result::Result<Value, CniError>,
}

/// A whole chain: the final result (ADD) or success, and every call made.
#[derive(Debug, Clone)]
pub struct ChainOutcome {
    pub result: std::result::Result<Value, CniError>,
    pub calls: Vec<PluginCall>,
    pub elapsed: Duration,
}

impl ChainOutcome {
    /// The final result, or an error naming the failing plugin.
    pub fn ok(&self) -> Result<&Value> {
        self.result.as_ref().map_err(|e| {
            // DEL goes on past a failure and reports the first one: name that call's plugin.
            let who = self
                .calls
                .iter()
                .find(|c| c.outcome.is_err())
                .map_or("?", |c| c.plugin.as_str());
            anyhow!("{who}: {e}")
        })
    }
}

/// Raw environment for one plugin process; `None` leaves a variable unset.
#[derive(Debug, Clone, Default)]
pub struct PluginEnv {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
    pub path: Option<String>,
}

/// Runs plugins found in `dir` inside the namespace `host`.
#[derive(Debug)]
pub struct Runner<'a> {
    pub dir: PathBuf,
    pub host: &'a NetNs,
}

impl<'a> Runner<'a> {
    pub fn new(dir: impl Into<PathBuf>, host: &'a NetNs) -> Runner<'a> {
        Runner {
            dir: dir.into(),
            host,
        }
    }

    /// The standard environment of a call.
    pub fn env(&self, command: &str, rt: &Runtime) -> PluginEnv {
        PluginEnv {
            command: Some(command.into()),
            container_id: Some(rt.container_id.clone()),
            netns: Some(
                rt.netns
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            ifname: Some(rt.ifname.clone()),
            args: Some(rt.args.clone()),
            path: Some(self.dir.display().to_string()),
        }
    }

    /// ADD through the chain; stops at the first failing plugin (libcni does not roll back).
    pub fn add(&self, conflist: &Value, rt: &Runtime) -> ChainOutcome {
        let started = Instant::now();
        let mut calls = Vec::new();
        let mut prev: Option<Value> = None;
        for plugin in plugins_of(conflist) {
            let conf = build_one(conflist, plugin, prev.as_ref(), rt);
            let call = self.call(plugin_type(plugin), &self.env("ADD", rt), &conf);
            let outcome = call.outcome.clone();
            calls.push(call);
            match outcome {
                Ok(v) => prev = Some(v),
                Err(e) => return finish(Err(e), calls, started),
            }
        }
        finish(Ok(prev.unwrap_or(Value::Null)), calls, started)
    }

    /// DEL in reverse order with the cached ADD result as prevResult; keeps going past errors
    /// and reports the first one, as libcni does not (it stops) — tests want every failure.
    pub fn del(&self, conflist: &Value, rt: &Runtime, cached: Option<&Value>) -> ChainOutcome {
        let started = Instant::now();
        let mut calls = Vec::new();
        let prev = cached.filter(|_| version_at_least(conflist, (0, 4, 0)));
        let mut first_err = None;
        for plugin in plugins_of(conflist).iter().rev() {
            let conf = build_one(conflist, plugin, prev, rt);
            let call = self.call(plugin_type(plugin), &self.env("DEL", rt), &conf);
            if let Err(e) = &call.outcome {
                first_err.get_or_insert_with(|| e.clone());
            }
            calls.push(call);
        }
        finish(first_err.map_or(Ok(Value::Null), Err), calls, started)
    }

    /// CHECK in order with the cached ADD result as prevResult.
    pub fn check(&self, conflist: &Value, rt: &Runtime, cached: &Value) -> ChainOutcome {
        let started = Instant::now();
        let mut calls = Vec::new();
        for plugin in plugins_of(conflist) {
            let conf = build_one(conflist, plugin, Some(cached), rt);
            let call = self.call(plugin_type(plugin), &self.env("CHECK", rt), &conf);
            let outcome = call.outcome.clone();
            calls.push(call);
            if let Err(e) = outcome {
                return finish(Err(e), calls, started);
            }
        }
        finish(Ok(Value::Null), calls, started)
    }

    /// VERSION of one plugin.
    pub fn version(&self, plugin: &str, cni_version: &str) -> PluginCall {
        let env = PluginEnv {
            command: Some("VERSION".into()),
            path: Some(self.dir.display().to_string()),
            ..PluginEnv::default()
        };
        self.call(plugin, &env, &json!({ "cniVersion": cni_version }))
    }

    /// One plugin process with a JSON config.
    pub fn call(&self, plugin: &str, env: &PluginEnv, conf: &Value) -> PluginCall {
        let stdin = serde_json::to_vec(conf).expect("a Value always serialises");
        self.call_raw(plugin, env, &stdin)
    }

    /// One plugin process with raw stdin bytes (for malformed-input tests).
    pub fn call_raw(&self, plugin: &str, env: &PluginEnv, stdin: &[u8]) -> PluginCall {
        let command = env.command.clone().unwrap_or_default();
        let started = Instant::now();
        let (outcome, max_rss_kib) = match self.spawn_wait(plugin, env, stdin) {
            Ok((status, stdout, stderr, rss)) => (interpret(status, stdout, stderr), rss),
            Err(e) => (Err(spawn_error(&e)), 0),
        };
        PluginCall {
            plugin: plugin.into(),
            command,
            elapsed: started.elapsed(),
            max_rss_kib,
            outcome,
        }
    }

    fn spawn_wait(
        &self,
        plugin: &str,
        env: &PluginEnv,
        stdin: &[u8],
    ) -> Result<(ExitStatus, Vec<u8>, Vec<u8>, i64)> {
        let exe = self.dir.join(plugin);
        let mut cmd = Command::new(&exe);
        for var in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            cmd.env_remove(var);
        }
        for var in ["CNI_ARGS", "CNI_PATH"] {
            cmd.env_remove(var);
        }
        let pairs = [
            ("CNI_COMMAND", &env.command),
            ("CNI_CONTAINERID", &env.container_id),
            ("CNI_NETNS", &env.netns),
            ("CNI_IFNAME", &env.ifname),
            ("CNI_ARGS", &env.args),
            ("CNI_PATH", &env.path),
        ];
        for (k, v) in pairs {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        enter_in_child(&mut cmd, self.host);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", exe.display()))?;
        let mut input = child.stdin.take().context("stdin")?;
        let stdin = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&stdin);
        });
        let mut err_pipe = child.stderr.take().context("stderr")?;
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err_pipe.read_to_end(&mut buf);
            buf
        });
        let mut stdout = Vec::new();
        child
            .stdout
            .take()
            .context("stdout")?
            .read_to_end(&mut stdout)?;
        let _ = writer.join();
        let stderr = err_reader.join().unwrap_or_default();
        let (status, rss) = wait4(child.id())?;
        Ok((status, stdout, stderr, rss))
    }
}

/// Reap `pid` with wait4(2) to get its own rusage (std's wait does not return it).
fn wait4(pid: u32) -> Result<(ExitStatus, i64)> {
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of that plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals; pid is our own un-reaped child.
        let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
        if r >= 0 {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context("wait4");
        }
    }
    Ok((ExitStatus::from_raw(status), usage.ru_maxrss))
}

fn spawn_error(e: &anyhow::Error) -> CniError {
    CniError {
        code: 0,
        msg: format!("{e:#}"),
        details: String::new(),
        stdout: String::new(),
        stderr: String::new(),
        status: None,
    }
}

/// Success: stdout is the result (empty for DEL/CHECK). Failure: stdout should hold the error.
fn interpret(
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
) -> std::result::Result<Value, CniError> {
    let out = String::from_utf8_lossy(&stdout).into_owned();
    let err = String::from_utf8_lossy(&stderr).into_owned();
    let parsed: Option<Value> = serde_json::from_str(out.trim()).ok();
    if status.success() {
        return match (out.trim().is_empty(), parsed) {
            (true, _) => Ok(Value::Null),
            (false, Some(v)) => Ok(v),
            (false, None) => Err(CniError {
                code: 0,
                msg: "plugin succeeded but printed no JSON".into(),
                details: String::new(),
                stdout: out,
                stderr: err,
                status: status.code(),
            }),
        };
    }
    let field = |k: &str| parsed.as_ref().and_then(|v| v.get(k));
    Err(CniError {
        code: field("code").and_then(Value::as_u64).unwrap_or(0),
        msg: field("msg")
            .and_then(Value::as_str)
            .unwrap_or("no error JSON on stdout")
            .into(),
        details: field("details")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .into(),
        stdout: out,
        stderr: err,
        status: status.code(),
    })
}

fn finish(
    result: std::result::Result<Value, CniError>,
    calls: Vec<PluginCall>,
    started: Instant,
) -> ChainOutcome {
    ChainOutcome {
        result,
        calls,
        elapsed: started.elapsed(),
    }
}

/// The conflist's plugins (empty when malformed).
pub fn plugins_of(conflist: &Value) -> &[Value] {
    conflist
        .get("plugins")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn plugin_type(plugin: &Value) -> &str {
    plugin.get("type").and_then(Value::as_str).unwrap_or("")
}

/// Does the conflist's cniVersion reach `min`?
pub fn version_at_least(conflist: &Value, min: (u32, u32, u32)) -> bool {
    let v = conflist
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("0.1.0");
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let got = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    got >= min
}

/// One plugin's stdin, as libcni's buildOneConfig makes it.
pub fn build_one(conflist: &Value, plugin: &Value, prev: Option<&Value>, rt: &Runtime) -> Value {
    let mut conf = plugin.as_object().cloned().unwrap_or_default();
    for key in ["name", "cniVersion"] {
        if let Some(v) = conflist.get(key) {
            conf.insert(key.into(), v.clone());
        }
    }
    if let Some(p) = prev {
        conf.insert("prevResult".into(), p.clone());
    }
    let mut rc = Map::new();
    if let Some(caps) = plugin.get("capabilities").and_then(Value::as_object) {
        for (cap, on) in caps {
            if on.as_bool() == Some(true) {
                if let Some(arg) = rt.capability_args.get(cap) {
                    rc.insert(cap.clone(), arg.clone());
                }
            }
        }
    }
    if !rc.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(rc));
    }
    Value::Object(conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_one_injects_name_version_prev_and_only_declared_capabilities() {
        let list = json!({"cniVersion": "1.0.0", "name": "n", "plugins": [
            {"type": "portmap", "capabilities": {"portMappings": true, "mac": false}}]});
        let rt = Runtime::new("c", None, "eth0")
            .with_capability("portMappings", json!([{"hostPort": 1}]))
            .with_capability("mac", json!("aa:bb:cc:dd:ee:ff"))
            .with_capability("ips", json!(["10.244.0.2/24"]));
        let prev = json!({"cniVersion": "1.0.0"});
        let conf = build_one(&list, &plugins_of(&list)[0], Some(&prev), &rt);
        assert_eq!(conf["name"], "n");
        assert_eq!(conf["cniVersion"], "1.0.0");
        assert_eq!(conf["prevResult"], prev);
        assert_eq!(
            conf["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 1}]})
        );
    }

    #[test]
    fn no_runtime_config_without_capabilities() {
        let list = json!({"cniVersion": "0.4.0", "name": "n", "plugins": [{"type": "tuning"}]});
        let rt = Runtime::new("c", None, "eth0").with_capability("mac", json!("x"));
        let conf = build_one(&list, &plugins_of(&list)[0], None, &rt);
        assert!(conf.get("runtimeConfig").is_none());
        assert!(conf.get("prevResult").is_none());
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_at_least(&json!({"cniVersion": "0.4.0"}), (0, 4, 0)));
        assert!(version_at_least(&json!({"cniVersion": "1.0.0"}), (0, 4, 0)));
        assert!(!version_at_least(
            &json!({"cniVersion": "0.3.1"}),
            (0, 4, 0)
        ));
    }

    #[test]
    fn error_json_is_parsed_from_stdout() {
        let e = interpret(
            ExitStatus::from_raw(1 << 8),
            br#"{"cniVersion":"1.0.0","code":7,"msg":"bad"}"#.to_vec(),
            Vec::new(),
        )
        .unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (7, "bad"));
    }
}
