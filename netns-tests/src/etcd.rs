//! A real etcd for a test: apt's `/usr/bin/etcd` with its own data dir, on free ports of
//! 127.0.0.1, or inside a test namespace on an address of it (so agents and controllers in
//! "host" namespaces reach it over the test's underlay); killed and removed on drop. A missing
//! etcd fails the test (install it: scripts/deps.sh).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::scenario::TempDir;
use crate::topology::{enter_in_child, TestNs};

pub const ETCD: &str = "/usr/bin/etcd";

pub struct EtcdServer {
    child: Option<Child>,
    dir: TempDir,
    /// The namespace it runs in (None: the test's own).
    ns: Option<libnet::netns::NetNs>,
    pub url: String,
    addr: SocketAddr,
    peer: String,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EtcdServer {
    /// etcd on 127.0.0.1 of the test's own namespace.
    pub fn start() -> Result<EtcdServer> {
        Self::start_at(None, IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// etcd inside `ns`, listening on `ip` (an address of `ns`), ports 2379/2380.
    pub fn start_in(ns: &TestNs, ip: IpAddr) -> Result<EtcdServer> {
        Self::start_at(Some(ns), ip)
    }

    fn start_at(ns: Option<&TestNs>, ip: IpAddr) -> Result<EtcdServer> {
        ensure!(
            std::path::Path::new(ETCD).exists(),
            "{ETCD} is missing: install etcd-server (scripts/deps.sh)"
        );
        let (client, peer) = match ns {
            Some(_) => (2379, 2380),
            None => (free_port()?, free_port()?),
        };
        let addr = SocketAddr::new(ip, client);
        let host = match ip {
            IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        let mut s = EtcdServer {
            child: None,
            dir: TempDir::new("etcd")?,
            ns: ns
                .map(|n| libnet::netns::NetNs::open(n.path()))
                .transpose()?,
            url: format!("http://{host}:{client}"),
            addr,
            peer: format!("http://{host}:{peer}"),
        };
        s.restart()?;
        Ok(s)
    }

    fn log(&self) -> std::path::PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// Starts etcd again on the same address and data (after [`Self::stop`]).
    pub fn restart(&mut self) -> Result<()> {
        ensure!(self.child.is_none(), "etcd is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())?;
        let mut cmd = Command::new(ETCD);
        cmd.arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &self.url])
            .args(["--advertise-client-urls", &self.url])
            .args(["--listen-peer-urls", &self.peer])
            .args(["--initial-advertise-peer-urls", &self.peer])
            .args(["--initial-cluster", &format!("default={}", self.peer)])
            // The v2 API too: Docker 20.10's `--cluster-store etcd://` (libkv) speaks v2.
            .arg("--enable-v2=true")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(ns) = &self.ns {
            enter_in_child(&mut cmd, ns);
        }
        self.child = Some(cmd.spawn().context("spawn etcd")?);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if self.healthy() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                bail!("etcd exited with {status}:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "etcd at {} not healthy after 30 s:\n{}",
            self.url,
            self.log_tail()
        )
    }

    pub fn log_tail(&self) -> String {
        let all = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn healthy(&self) -> bool {
        let addr = self.addr;
        let probe = move || -> bool {
            let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
                return false;
            };
            let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
            if c.write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n")
                .is_err()
            {
                return false;
            }
            let mut out = String::new();
            let _ = c.read_to_string(&mut out);
            out.contains("\"health\":\"true\"")
        };
        match &self.ns {
            Some(ns) => ns.run_in(probe).unwrap_or(false),
            None => probe(),
        }
    }

    /// Kills etcd (SIGKILL) and waits for it; the data stays for [`Self::restart`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}
