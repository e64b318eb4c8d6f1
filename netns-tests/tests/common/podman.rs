//! Self-contained helpers for running root podman (CNI backend) inside a test network namespace.
//!
//! Everything podman writes goes under one temp dir (storage root, run root, tmp dir, network
//! configs, file locks), and podman runs in a test netns through `nsenter --net`, so the host's
//! links and firewall are never touched. Each helper owns what it made and removes it in `Drop`:
//! `Netns` deletes its namespace, `Podman` removes containers, networks, sandbox netns files,
//! host-local state of its networks, unmounts everything under its dir and deletes the dir.

use anyhow::{anyhow, bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Plugins podman's generated conflist chains: bridge(+host-local) → portmap → firewall → tuning.
pub const PODMAN_PLUGINS: &[&str] = &["bridge", "host-local", "portmap", "firewall", "tuning"];
/// Where the blob-info cache of `podman import` lands for root (not configurable in podman 4.3).
const CONTAINERS_STATE: &str = "/var/lib/containers";
/// runc's default state dir (podman 4.3 passes no `--root` to it as root); left empty after use.
const RUNC_STATE: &str = "/run/runc";
/// libcni's cache of ADD results, one file per `<network>-<container id>-<ifname>`.
pub const CNI_RESULTS_DIR: &str = "/var/lib/cni/results";
/// host-local's default `dataDir`; podman's conflist sets none.
pub const HOST_LOCAL_DEFAULT_DIR: &str = "/var/lib/cni/networks";

/// `knt-<pid>-<tag>`: unique per test process, recognisable as ours.
pub fn unique(tag: &str) -> String {
    format!("knt-{}-{tag}", std::process::id())
}

/// Root tests fail (never skip) without root.
pub fn assert_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test needs root (network namespaces, podman); run it as root"
    );
}

/// Fails loudly when a tool the test drives is not installed.
pub fn require_tools(tools: &[&str]) {
    let path = std::env::var("PATH").unwrap_or_default();
    for tool in tools {
        let found = path.split(':').any(|d| Path::new(d).join(tool).is_file());
        assert!(
            found,
            "required tool `{tool}` is not installed (run `make deps`)"
        );
    }
}

/// The CNI plugin dir under test: `$KNIT_CNI_BIN`, else `<workspace>/target/cni/bin` (`make build`),
/// made absolute (podman's `cni_plugin_dirs` must be).
pub fn cni_bin_dir() -> PathBuf {
    let dir = match std::env::var_os("KNIT_CNI_BIN") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/cni/bin"),
    };
    dir.canonicalize().unwrap_or(dir)
}

/// Checks the plugin dir holds every plugin podman's conflist needs.
pub fn check_plugin_dir(dir: &Path) -> Result<()> {
    for p in PODMAN_PLUGINS {
        let bin = dir.join(p);
        if !bin.is_file() {
            bail!(
                "CNI plugin {} missing (run `make build`, or set KNIT_CNI_BIN)",
                bin.display()
            );
        }
    }
    Ok(())
}

/// Runs a command, returning stdout; the error carries the command, status and stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("spawn {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Retries `f` until it succeeds or `timeout` passes; returns the last error.
pub fn retry<T>(timeout: Duration, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() >= timeout => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A named network namespace (`ip netns add`), lo up, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: String) -> Result<Self> {
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `nsenter --net=/run/netns/NAME PROG`: only the netns changes (`ip netns exec` would also
    /// remount /sys, which podman and dockerd dislike).
    pub fn exec(&self, prog: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path())).arg(prog);
        cmd
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("cleanup: {e:#}");
        }
    }
}

/// `ip link add A netns a type veth peer name B netns b`, with `a_addr`/`b_addr` (CIDR) on them.
/// The pair goes away with either namespace.
pub fn veth_between(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) -> Result<()> {
    let (la, lb) = (unique("va"), unique("vb"));
    run(Command::new("ip")
        .args(["link", "add", &la, "netns", &a.name, "type", "veth"])
        .args(["peer", "name", &lb, "netns", &b.name]))?;
    for (ns, link, addr) in [(a, &la, a_addr), (b, &lb, b_addr)] {
        ns.ip(&["addr", "add", addr, "dev", link])?;
        ns.ip(&["link", "set", link, "up"])?;
    }
    Ok(())
}

/// A busybox-static rootfs: bin/busybox plus applet links, and /www/index.html holding `body`.
pub fn busybox_rootfs(dir: &Path, body: &str) -> Result<()> {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin)?;
    fs::copy("/bin/busybox", bin.join("busybox")).context("copy /bin/busybox (busybox-static)")?;
    for applet in [
        "sh", "ping", "ip", "nc", "httpd", "sleep", "cat", "echo", "ls", "hostname",
    ] {
        std::os::unix::fs::symlink("busybox", bin.join(applet))?;
    }
    fs::create_dir_all(dir.join("www"))?;
    fs::write(dir.join("www/index.html"), body)?;
    Ok(())
}

/// A container as the test needs it: name, id, address and its sandbox netns file.
pub struct Container {
    pub name: String,
    pub id: String,
    pub ip: String,
    pub gateway: String,
    pub sandbox: String,
}

/// Root podman with the CNI backend, all state under one temp dir, run inside `netns`.
pub struct Podman {
    pub dir: PathBuf,
    netns_path: String,
    networks: Vec<String>,
    /// Every network ever created here: host-local keeps its dir after `network rm`.
    host_local_nets: Vec<String>,
    sandboxes: Vec<String>,
    had_containers_state: bool,
    had_runc_state: bool,
    closed: bool,
}

impl Podman {
    /// Writes containers.conf under a fresh `/tmp/knt-<pid>-podman`. Why each setting (checked
    /// on the Debian 12 hosts, podman 4.3.1): `network_backend = "cni"` + `cni_plugin_dirs` put
    /// the plugins under test in the chain; `runtime = "runc"` because crun 1.8 refuses this
    /// host's hybrid cgroup layout; `cgroupfs` as there is no systemd; `lock_type = "file"` and
    /// `tmp_dir` keep podman's locks and state out of /dev/shm and /run/libpod; `default_ulimits`
    /// because root podman asks for nofile 1048576, above this sandbox's hard limit (runc:
    /// "error setting rlimit type 7: operation not permitted"). What remains
    /// global: /run/netns/netns-* sandboxes, /var/lib/cni/{networks,results}, runc's /run/runc
    /// and the image blob-info cache in /var/lib/containers; cleanup removes each of them.
    pub fn new(netns: &Netns, cni_bin: &Path) -> Result<Self> {
        Podman::new_at(&netns.path(), cni_bin)
    }

    /// As [`Podman::new`], in the namespace at `netns_path` (one another harness made).
    pub fn new_at(netns_path: &str, cni_bin: &Path) -> Result<Self> {
        sweep_stale();
        let dir = std::env::temp_dir().join(unique("podman"));
        if dir.exists() {
            bail!(
                "{} exists: a previous run with this pid did not clean up",
                dir.display()
            );
        }
        fs::create_dir_all(dir.join("net"))?;
        let pm = Podman {
            dir,
            netns_path: netns_path.to_string(),
            networks: Vec::new(),
            host_local_nets: Vec::new(),
            sandboxes: Vec::new(),
            had_containers_state: Path::new(CONTAINERS_STATE).exists(),
            had_runc_state: Path::new(RUNC_STATE).exists(),
            closed: false,
        };
        let d = pm.dir.display();
        let conf = format!(
            "[containers]\n\
             default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             [engine]\n\
             cgroup_manager = \"cgroupfs\"\n\
             runtime = \"runc\"\n\
             lock_type = \"file\"\n\
             tmp_dir = \"{d}/tmp\"\n\
             events_logger = \"file\"\n\
             events_logfile_path = \"{d}/events.log\"\n\
             [network]\n\
             network_backend = \"cni\"\n\
             cni_plugin_dirs = [\"{}\"]\n\
             network_config_dir = \"{d}/net\"\n",
            cni_bin.display()
        );
        fs::write(pm.dir.join("containers.conf"), conf)?;
        Ok(pm)
    }

    /// `nsenter --net=T podman --root R --runroot RR ARGS` with `CONTAINERS_CONF`, killed after
    /// a minute so that a hung podman fails the test instead of wedging CI.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=5", "60", "nsenter"])
            .arg(format!("--net={}", self.netns_path))
            .arg("podman")
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"));
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Result<String> {
        run(&mut self.cmd(args))
    }

    /// `tar -C rootfs -c . | podman import - TAG` from a busybox-static rootfs.
    pub fn import_busybox(&self, tag: &str, www_body: &str) -> Result<()> {
        let rootfs = self.dir.join("rootfs");
        busybox_rootfs(&rootfs, www_body)?;
        let tar = self.dir.join("rootfs.tar");
        run(Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg("."))?;
        self.run(&["import", &tar.to_string_lossy(), tag])?;
        Ok(())
    }

    /// `podman network create --subnet SUBNET NAME`; returns the conflist podman wrote.
    pub fn network_create(&mut self, name: &str, subnet: &str) -> Result<String> {
        self.networks.push(name.to_string());
        self.host_local_nets.push(name.to_string());
        self.run(&["network", "create", "--subnet", subnet, name])?;
        let path = self.dir.join("net").join(format!("{name}.conflist"));
        fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
    }

    /// A network on a bridge someone else made (knit's Docker network), written as a user
    /// would: a conflist in podman's network dir (podman 4.3 has no `--interface-name`), the
    /// chain podman itself writes: bridge + host-local, portmap, firewall, tuning.
    pub fn network_on_bridge(&mut self, name: &str, subnet: &str, bridge: &str) -> Result<()> {
        self.networks.push(name.to_string());
        self.host_local_nets.push(name.to_string());
        let conflist = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": name,
            "plugins": [
                {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true,
                 "hairpinMode": true,
                 "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
                          "ranges": [[{"subnet": subnet}]]}},
                {"type": "portmap", "capabilities": {"portMappings": true}},
                {"type": "firewall", "backend": ""},
                {"type": "tuning"}
            ]
        });
        let path = self.dir.join("net").join(format!("{name}.conflist"));
        fs::write(&path, serde_json::to_string_pretty(&conflist)?)
            .with_context(|| format!("write {}", path.display()))
    }

    /// `podman network rm NAME` (then no longer removed at cleanup).
    pub fn network_rm(&mut self, name: &str) -> Result<()> {
        self.run(&["network", "rm", name])?;
        self.networks.retain(|n| n != name);
        Ok(())
    }

    /// `podman run -d --name NAME --network NET EXTRA... IMAGE CMD...`, then inspects it.
    pub fn run_container(
        &mut self,
        name: &str,
        net: &str,
        extra: &[&str],
        image_cmd: &[&str],
    ) -> Result<Container> {
        let mut args = vec!["run", "-d", "--name", name, "--network", net];
        args.extend_from_slice(extra);
        args.extend_from_slice(image_cmd);
        self.run(&args)?;
        self.inspect(name, net)
    }

    /// `podman restart -t 0 NAME`: the runtime calls DEL, then ADD on a fresh sandbox.
    pub fn restart(&mut self, name: &str, net: &str) -> Result<Container> {
        self.run(&["restart", "-t", "0", name])?;
        self.inspect(name, net)
    }

    /// `podman inspect NAME`: id, address and gateway on `net`, sandbox netns file.
    pub fn inspect(&mut self, name: &str, net: &str) -> Result<Container> {
        let json: serde_json::Value = serde_json::from_str(&self.run(&["inspect", name])?)?;
        let c = &json[0];
        let settings = &c["NetworkSettings"];
        let field = |v: &serde_json::Value, what: &str| {
            v.as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| anyhow!("podman inspect {name}: no {what}"))
        };
        let sandbox = field(&settings["SandboxKey"], "SandboxKey")?;
        self.sandboxes.push(sandbox.clone());
        Ok(Container {
            name: name.to_string(),
            id: field(&c["Id"], "Id")?,
            ip: field(&settings["Networks"][net]["IPAddress"], "IPAddress")?,
            gateway: field(&settings["Networks"][net]["Gateway"], "Gateway")?,
            sandbox,
        })
    }

    /// Sandbox netns files of every container podman knows (a killed run recorded none).
    fn sandbox_keys(&self) -> Vec<String> {
        let ids = self.run(&["ps", "-aq"]).unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Vec::new();
        }
        let mut args = vec!["inspect", "--format", "{{.NetworkSettings.SandboxKey}}"];
        args.extend(ids);
        let keys = self.run(&args).unwrap_or_default();
        keys.lines()
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Cleans up and reports every problem met (the test asserts on it); `Drop` does the same
    /// silently-but-loudly (to stderr) when the test failed earlier.
    pub fn close(mut self) -> Result<()> {
        let problems = self.cleanup();
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("podman cleanup:\n  {}", problems.join("\n  "))
        }
    }

    fn cleanup(&mut self) -> Vec<String> {
        if self.closed {
            return Vec::new();
        }
        self.closed = true;
        let mut problems = Vec::new();
        let mut note = |r: Result<()>| {
            if let Err(e) = r {
                problems.push(format!("{e:#}"));
            }
        };
        if self.dir.join("root").exists() {
            self.sandboxes.extend(self.sandbox_keys());
            note(self.run(&["rm", "-af", "-t", "0"]).map(drop));
            for net in &self.networks {
                note(self.run(&["network", "rm", "-f", net]).map(drop));
            }
        }
        note(kill_processes_under(&self.dir));
        for sandbox in &self.sandboxes {
            note(remove_netns_file(Path::new(sandbox)));
        }
        for net in &self.host_local_nets {
            note(remove_host_local_state(net));
        }
        note(unmount_under(&self.dir));
        note(
            fs::remove_dir_all(&self.dir).with_context(|| format!("rm -rf {}", self.dir.display())),
        );
        if !self.had_containers_state {
            note(remove_blob_info_cache());
        }
        if !self.had_runc_state {
            // Only if empty: another runc user may have appeared meanwhile.
            let _ = fs::remove_dir(RUNC_STATE);
        }
        let left = mounts_under(&self.dir);
        if !left.is_empty() {
            problems.push(format!("still mounted: {left:?}"));
        }
        problems
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for p in self.cleanup() {
            eprintln!("cleanup: {p}");
        }
    }
}

/// Removes what an earlier, killed run (its pid gone, so no `Drop` ran) left behind: its podman
/// dir (processes, mounts, files), its network's host-local state and its T/O namespaces.
pub fn sweep_stale() {
    let dead = |name: &str, tag: &str| -> Option<u32> {
        let pid = name
            .strip_prefix("knt-")?
            .strip_suffix(tag)?
            .parse::<u32>()
            .ok()?;
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(pid)
    };
    for e in fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = dead(&name, "-podman") {
            eprintln!("sweep: cleaning up stale {}", e.path().display());
            // Its T still exists (swept below), so podman can still run the plugins' DEL.
            let stale = Podman {
                dir: e.path(),
                netns_path: format!("/run/netns/knt-{pid}-t"),
                networks: vec![format!("knt-{pid}-net")],
                host_local_nets: vec![format!("knt-{pid}-net")],
                sandboxes: Vec::new(),
                had_containers_state: true,
                had_runc_state: true,
                closed: false,
            };
            drop(stale);
        }
    }
    for e in fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if dead(&name, "-t").or_else(|| dead(&name, "-o")).is_some() {
            eprintln!("sweep: removing stale netns {name}");
            let _ = run(Command::new("ip").args(["netns", "del", &name]));
        }
    }
}

/// SIGKILLs processes started for this podman dir that outlived `podman rm` (conmon names the
/// dir in its arguments; a container's root is under it).
fn kill_processes_under(dir: &Path) -> Result<()> {
    let needle = dir.to_string_lossy().into_owned();
    let me = std::process::id() as i32;
    for entry in fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let root = fs::read_link(entry.path().join("root")).unwrap_or_default();
        if pid != me
            && (String::from_utf8_lossy(&cmdline).contains(&needle) || root.starts_with(dir))
        {
            eprintln!("cleanup: killing leftover pid {pid}");
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
    }
    Ok(())
}

/// A container's netns file podman bind-mounted under /run/netns (if podman left it).
fn remove_netns_file(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
    fs::remove_file(path).with_context(|| format!("rm {}", path.display()))
}

/// host-local's files for `net` (default data dir) and libcni's cached results for it.
fn remove_host_local_state(net: &str) -> Result<()> {
    // The reference's directory and knit's index of it.
    let base = Path::new(HOST_LOCAL_DEFAULT_DIR);
    for data in [
        base.join(net),
        base.join(libnet::ipam::file_store::INDEX_DIR).join(net),
    ] {
        if data.exists() {
            fs::remove_dir_all(&data).with_context(|| format!("rm -rf {}", data.display()))?;
        }
    }
    let prefix = format!("{net}-");
    if let Ok(entries) = fs::read_dir(CNI_RESULTS_DIR) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                fs::remove_file(e.path())?;
            }
        }
    }
    Ok(())
}

/// Mount points at or under `dir`, from /proc/self/mountinfo (octal escapes undone).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .filter(|m| m.starts_with(dir))
        .collect()
}

fn unescape_mountinfo(s: &str) -> String {
    let (mut out, b) = (Vec::new(), s.as_bytes());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .and_then(|o| std::str::from_utf8(o).ok());
        match oct.and_then(|o| u8::from_str_radix(o, 8).ok()) {
            Some(c) if b[i] == b'\\' => {
                out.push(c);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts everything under `dir`, deepest first, lazily if busy; repeats for stacked mounts.
fn unmount_under(dir: &Path) -> Result<()> {
    for _ in 0..5 {
        let mut mounts = mounts_under(dir);
        if mounts.is_empty() {
            return Ok(());
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in mounts {
            if nix::mount::umount(&m).is_err() {
                let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
    bail!("could not unmount {:?}", mounts_under(dir))
}

/// Removes /var/lib/containers when podman created it just for its blob-info cache.
fn remove_blob_info_cache() -> Result<()> {
    let root = Path::new(CONTAINERS_STATE);
    let cache = root.join("cache");
    let only = |d: &Path, name: &str| -> bool {
        fs::read_dir(d).is_ok_and(|rd| {
            rd.flatten()
                .all(|e| e.file_name().to_string_lossy() == name)
        })
    };
    if root.exists() && only(root, "cache") && only(&cache, "blob-info-cache-v1.boltdb") {
        fs::remove_dir_all(root).with_context(|| format!("rm -rf {}", root.display()))?;
    }
    Ok(())
}
