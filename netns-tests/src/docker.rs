//! A real Docker Engine (apt's docker.io 20.10) inside a scratch namespace standing for a host,
//! with its own data root, exec root and socket, plus knit's agent serving it as a plugin.
//!
//! dockerd is started through `nsenter --net=` (DESIGN.md: `ip netns exec` remounts /sys and
//! dockerd then fails), with `--bridge=none --iptables=false --ip6tables=false` so it touches
//! nothing of the real host. The plugin socket must sit where Docker looks for it
//! (`/run/docker/plugins`), so each test's plugin has its own name (`knt<pid><n>`).
//! Everything is stopped and removed on drop.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::scenario::TempDir;
use crate::topology::TestNs;

/// Docker 20.10's client (the machine's PATH may hold a newer one first).
pub const DOCKER: &str = "/usr/bin/docker";
/// The test image: busybox-static imported as a one-layer image.
pub const IMAGE: &str = "knit-test:busybox";
/// Where Docker looks for legacy plugin sockets.
pub const PLUGIN_DIR: &str = "/run/docker/plugins";

/// dockerd and knit's agent in one namespace.
pub struct DockerHost {
    pub ns: TestNs,
    pub dir: TempDir,
    daemon: Option<Child>,
    agent: Option<Child>,
    pub plugin: String,
    pub knit: PathBuf,
    /// knit's `--cni-data-dir` (default: the test dir's `cni`; the podman test shares
    /// `/var/lib/cni/networks` with podman's host-local).
    pub cni_data_dir: PathBuf,
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

impl DockerHost {
    /// A namespace with dockerd running and the test image imported; no agent yet.
    pub fn start(tag: &str) -> Result<DockerHost> {
        crate::require_root();
        ensure!(
            Path::new(DOCKER).exists() && Path::new("/usr/sbin/dockerd").exists(),
            "Docker Engine is missing: `make deps` installs docker.io"
        );
        let knit = crate::knit_bin()?;
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = TempDir::new(tag)?;
        let mut h = DockerHost {
            ns: TestNs::new(tag)?,
            cni_data_dir: dir.path().join("cni"),
            dir,
            daemon: None,
            agent: None,
            plugin: format!("knt{}x{n}", std::process::id()),
            knit,
        };
        h.start_daemon()?;
        h.import_image()?;
        Ok(h)
    }

    pub fn sock(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    pub fn plugin_sock(&self) -> PathBuf {
        Path::new(PLUGIN_DIR).join(format!("{}.sock", self.plugin))
    }

    fn start_daemon(&mut self) -> Result<()> {
        let d = self.dir.path();
        let log = std::fs::File::create(d.join("dockerd.log"))?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.ns.path().display()))
            .arg("dockerd")
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", self.sock().display()))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting dockerd")?;
        self.daemon = Some(child);
        let t = Instant::now();
        loop {
            if self.docker_raw(&["info"])?.status.success() {
                return Ok(());
            }
            if let Some(c) = self.daemon.as_mut() {
                if let Some(st) = c.try_wait()? {
                    bail!("dockerd exited ({st}): {}", self.daemon_log());
                }
            }
            if t.elapsed() > Duration::from_secs(60) {
                bail!("dockerd did not answer within 60 s: {}", self.daemon_log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn daemon_log(&self) -> String {
        let s = std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn import_image(&self) -> Result<()> {
        import_busybox(&self.sock(), self.dir.path())
    }

    /// `docker ARGS` against this daemon, whatever its exit status.
    pub fn docker_raw(&self, args: &[&str]) -> Result<Output> {
        Command::new(DOCKER)
            .env("DOCKER_HOST", format!("unix://{}", self.sock().display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("docker {args:?}"))
    }

    /// `docker ARGS`, failing with its stderr unless it succeeded; returns stdout trimmed.
    pub fn docker(&self, args: &[&str]) -> Result<String> {
        let o = self.docker_raw(args)?;
        ensure!(
            o.status.success(),
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    }

    /// `docker network create -d PLUGIN --ipam-driver PLUGIN --subnet SUBNET EXTRA... NAME`: a
    /// network on knit's driver and IPAM; returns Docker's network id.
    pub fn knit_network(&self, name: &str, subnet: &str, extra: &[&str]) -> Result<String> {
        let p = self.plugin.as_str();
        let mut args = vec!["network", "create", "-d", p, "--ipam-driver", p];
        args.extend(["--subnet", subnet]);
        args.extend(extra);
        args.push(name);
        self.docker(&args)
    }

    /// The knit command with this host's dirs, run inside its namespace.
    pub fn knit_command(&self) -> Command {
        let d = self.dir.path();
        let mut c = self.ns.command(&self.knit.display().to_string());
        c.arg("--state-dir")
            .arg(d.join("state"))
            .arg("--run-dir")
            .arg(d.join("run"))
            .arg("--cni-data-dir")
            .arg(&self.cni_data_dir);
        c
    }

    /// `knit ARGS` (CLI), failing unless it succeeded; returns stdout.
    pub fn knit(&self, args: &[&str]) -> Result<String> {
        let o = self.knit_command().args(args).output()?;
        ensure!(
            o.status.success(),
            "knit {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Start `knit agent` (its log in the test dir) and wait for its socket to answer.
    pub fn start_agent(&mut self, extra: &[&str]) -> Result<()> {
        ensure!(self.agent.is_none(), "the agent is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))?;
        let child = self
            .knit_command()
            .args(["agent", "--plugin-name", &self.plugin])
            .arg("--docker-host")
            .arg(format!("unix://{}", self.sock().display()))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting knit agent")?;
        self.agent = Some(child);
        let t = Instant::now();
        loop {
            if std::os::unix::net::UnixStream::connect(self.plugin_sock()).is_ok() {
                return Ok(());
            }
            if let Some(st) = self
                .agent
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.agent = None;
                bail!("knit agent exited ({st}): {}", self.agent_log());
            }
            if t.elapsed() > Duration::from_secs(20) {
                bail!("knit agent did not serve within 20 s: {}", self.agent_log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop the agent with `signal` (libc::SIGTERM, SIGKILL) and reap it.
    pub fn stop_agent(&mut self, signal: i32) -> Result<()> {
        let Some(mut c) = self.agent.take() else {
            return Ok(());
        };
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, signal) };
        let t = Instant::now();
        while c.try_wait()?.is_none() {
            if t.elapsed() > Duration::from_secs(20) {
                let _ = c.kill();
                bail!("knit agent did not stop within 20 s of signal {signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The running agent's pid (it is our direct child: setns before exec, no wrapper).
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    pub fn agent_log(&self) -> String {
        let s = std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// One raw HTTP POST to the plugin socket: (status, body).
    pub fn plugin_post(&self, method: &str, body: &[u8]) -> Result<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(self.plugin_sock())?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let head = format!(
            "POST /{method} HTTP/1.1\r\nHost: plugin\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes())?;
        // A peer may answer (413) and close before a huge body is written out.
        let _ = s.write_all(body);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("no HTTP status in {text:?}"))?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        Ok((status, body.to_string()))
    }
}

impl Drop for DockerHost {
    fn drop(&mut self) {
        if let Ok(ids) = self.docker(&["ps", "-aq"]) {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.docker_raw(&args);
            }
        }
        if let Some(mut d) = self.daemon.take() {
            // SAFETY: kill(2) on our own child (nsenter execs dockerd in place).
            unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
            let t = Instant::now();
            while matches!(d.try_wait(), Ok(None)) && t.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
        let _ = self.stop_agent(libc::SIGTERM);
        let _ = std::fs::remove_file(self.plugin_sock());
        unmount_under(self.dir.path());
    }
}

/// Anything dockerd left mounted under `dir` (its netns files), deepest first, so the dir can
/// go.
pub fn unmount_under(dir: &Path) {
    if let Ok(m) = std::fs::read_to_string("/proc/self/mounts") {
        let root = dir.display().to_string();
        let mut points: Vec<&str> = m
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|p| p.starts_with(&root))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = Command::new("umount").args(["-l", p]).status();
        }
    }
}

/// The test image ([`IMAGE`], busybox-static as one layer) imported into the Docker Engine on
/// `sock`; its rootfs is built under `dir`.
pub fn import_busybox(sock: &Path, dir: &Path) -> Result<()> {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::create_dir_all(root.join("tmp"))?;
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .context("busybox-static is missing (/bin/busybox)")?;
    let out = Command::new("/bin/busybox").arg("--list").output()?;
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()?;
    let out = Command::new(DOCKER)
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .args(["import", "-", IMAGE])
        .stdin(tar.stdout.context("tar stdout")?)
        .output()?;
    ensure!(
        out.status.success(),
        "docker import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
