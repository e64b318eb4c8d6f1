//! Helpers of the kernel tests: scratch namespaces standing for a "host" and "containers",
//! plugins run in-process through the skel inside the host, and small `ip` probes.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cni_plugins::plugins::by_name;
use cni_plugins::skel::run;
use libnet::netlink::Handle;
use libnet::netns::ScratchNs;
use serde_json::Value;

pub fn scratch(tag: &str) -> ScratchNs {
    assert!(
        nix::unistd::geteuid().is_root(),
        "root-tests must run as root"
    );
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    ScratchNs::create(&format!("knt-{}-{tag}{n}", std::process::id())).expect("create netns")
}

/// A container id unique to this test process.
pub fn cid(tag: &str) -> String {
    format!("knt{}{tag}", std::process::id())
}

/// Run `plugin` for `cmd` inside `host`, as a runtime would exec it there.
pub fn call(
    host: &ScratchNs,
    plugin: &str,
    cmd: &str,
    id: &str,
    netns: &str,
    ifname: &str,
    conf: &Value,
) -> (i32, Value) {
    let env: Vec<(&str, &str)> = vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", ifname),
        ("CNI_PATH", "/nonexistent"),
    ];
    let stdin = conf.to_string();
    let p = by_name(plugin).expect("known plugin");
    host.run_in(|| {
        let mut out = Vec::new();
        let env = env.as_slice();
        let code = run(p, &env, &mut stdin.as_bytes(), &mut out);
        let v = if out.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&out).unwrap()
        };
        (code, v)
    })
    .unwrap()
}

/// `conf` with `prevResult` set, for CHECK and DEL.
pub fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

pub fn links(ns: &ScratchNs) -> Vec<String> {
    let h = Handle::new_in(ns).unwrap();
    let mut v: Vec<String> = h.links().unwrap().into_iter().map(|l| l.name).collect();
    v.sort();
    v
}

/// `ip netns exec NS ping -c1 -W2 DST` succeeds.
pub fn ping(ns: &ScratchNs, dst: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns.name(), "ping", "-c1", "-W2", dst])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// `ip netns exec NS ip ...`, asserted to succeed.
pub fn ip(ns: &ScratchNs, args: &[&str]) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), "ip"])
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `nft ARGS` inside the namespace: its standard output, empty when nft failed (e.g. the
/// table or set does not exist).
pub fn nft_out(ns: &ScratchNs, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), "nft"])
        .args(args)
        .output()
        .expect("run nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The first address of an ADD result, without its prefix length.
pub fn first_ip(res: &Value) -> String {
    let a = res["ips"][0]["address"]
        .as_str()
        .expect("an address in the result");
    a.split('/').next().unwrap_or(a).to_string()
}

/// Assert a CHECK fails with a message that names `what`.
pub fn assert_check_fails(
    host: &ScratchNs,
    plugin: &str,
    id: &str,
    netns: &str,
    conf: &Value,
    what: &str,
) {
    let (code, out) = call(host, plugin, "CHECK", id, netns, "eth0", conf);
    assert_eq!(code, 1, "CHECK must notice {what}: {out}");
    let msg = out["msg"].as_str().unwrap_or_default();
    assert!(msg.contains(what), "CHECK error should name {what}: {out}");
}

/// Run the reference plugin `/usr/lib/cni/PLUGIN` (containernetworking-plugins 1.1.1) for
/// `cmd` inside `host` as a process; its exit status and stdout.
pub fn reference(
    host: &ScratchNs,
    plugin: &str,
    cmd: &str,
    id: &str,
    netns: &str,
    conf: &Value,
) -> (bool, Value) {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = Command::new("ip")
        .args(["netns", "exec", host.name()])
        .arg(format!("/usr/lib/cni/{plugin}"))
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the reference plugins are installed in /usr/lib/cni (make deps)");
    let stdin = conf.to_string();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), v)
}

/// Run `args` inside the namespace (`ip netns exec`); its standard output, asserting success.
pub fn sh(ns: &ScratchNs, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .args(args)
        .output()
        .expect("ip netns exec");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A process we started; killed (by its own pid) when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An iperf3 server in the namespace, bound to `bind` if given.
pub fn iperf_server(ns: &ScratchNs, bind: Option<&str>) -> Proc {
    let mut args = vec!["netns", "exec", ns.name(), "iperf3", "-s"];
    if let Some(addr) = bind {
        args.extend(["-B", addr]);
    }
    Proc(
        Command::new("ip")
            .args(&args)
            .stdout(Stdio::null())
            .spawn()
            .expect("iperf3 server"),
    )
}

/// Bits per second received in one 3 s iperf3 run from `client` to `server` (`reverse`: the
/// server sends). Retries for a few seconds while the server is not listening yet.
pub fn iperf(client: &ScratchNs, server: &str, reverse: bool) -> f64 {
    let mut args = vec![
        "netns",
        "exec",
        client.name(),
        "iperf3",
        "-c",
        server,
        "-t",
        "3",
        "-J",
    ];
    if reverse {
        args.push("-R");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = Command::new("ip").args(&args).output().expect("iperf3");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64() {
            return bps;
        }
        assert!(Instant::now() < deadline, "iperf3 failed: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
