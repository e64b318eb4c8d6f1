//! The multi-host lab of the agent tests: an underlay namespace with a bridge and a real etcd
//! on it, "hosts" (namespaces with an `eth0` on the underlay, private knit dirs), knit agents
//! in them, and a scripted controller in the underlay namespace that speaks the real protocol
//! (`sdn_controller::proto` types, framed by hand) and holds the leader key in etcd.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::process::Child;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use netns_tests::etcd::EtcdServer;
use netns_tests::knit::KnitHost;
use netns_tests::topology::TestNs;
use sdn_controller::proto::{AgentMsg, ControllerMsg};
use serde_json::Value;

pub const PREFIX: &str = "/knit";
pub const UNDERLAY_GW: &str = "192.168.77.1";
pub const CONTROLLER_PORT: u16 = 7070;

pub struct Lab {
    pub ul: TestNs,
    pub etcd: EtcdServer,
}

impl Lab {
    pub fn new() -> Result<Lab> {
        netns_tests::require_root();
        let ul = TestNs::new("ul")?;
        netns_tests::cluster::underlay_bridge(&ul, UNDERLAY_GW)?;
        let etcd = EtcdServer::start_in(&ul, UNDERLAY_GW.parse()?)?;
        Ok(Lab { ul, etcd })
    }

    /// A host namespace with `eth0` = 192.168.77.N on the underlay.
    pub fn host(&self, tag: &str, n: u8) -> Result<Host> {
        let k = KnitHost::new(tag)?;
        let ip = format!("192.168.77.{n}");
        netns_tests::cluster::underlay_port(&k.ns, &self.ul, tag, &ip)?;
        Ok(Host {
            name: tag.to_string(),
            underlay: ip.parse()?,
            k,
            agent: None,
            etcd: self.etcd.url.clone(),
        })
    }

    /// `etcdctl put`, from the underlay namespace.
    pub fn etcd_put(&self, key: &str, value: &str) -> Result<()> {
        self.ul
            .run(&["etcdctl", "--endpoints", &self.etcd.url, "put", key, value])?;
        Ok(())
    }

    /// Every key under `prefix` and its value.
    pub fn etcd_get_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let out = self.ul.stdout(&[
            "etcdctl",
            "--endpoints",
            &self.etcd.url,
            "get",
            "--prefix",
            prefix,
        ])?;
        let lines: Vec<&str> = out.lines().collect();
        Ok(lines
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].to_string(), c[1].to_string()))
            .collect())
    }

    /// A scripted controller listening on the underlay's gateway address, named leader.
    pub fn controller(&self) -> Result<Controller> {
        let addr = format!("{UNDERLAY_GW}:{CONTROLLER_PORT}");
        let c = self.controller_at(CONTROLLER_PORT, None)?;
        self.etcd_put(&format!("{PREFIX}/controller/leader"), &addr)?;
        Ok(c)
    }

    /// A scripted replica on `port` of the underlay's gateway; with `not_leader`, a standby
    /// that answers every hello with `NotLeader` naming it.
    pub fn controller_at(&self, port: u16, not_leader: Option<String>) -> Result<Controller> {
        let addr = format!("{UNDERLAY_GW}:{port}");
        let listener = self.ul.ns().run_in(move || TcpListener::bind(&addr))??;
        Ok(Controller::start(listener, not_leader))
    }
}

pub struct Host {
    pub name: String,
    pub underlay: IpAddr,
    pub k: KnitHost,
    pub agent: Option<Child>,
    etcd: String,
}

impl Host {
    /// `knit --etcd URL ARGS` in this host.
    pub fn knit(&self, args: &[&str]) -> Result<String> {
        let mut v = vec!["--etcd", &self.etcd];
        v.extend_from_slice(args);
        self.k.knit(&v)
    }

    pub fn knit_status(&self, args: &[&str]) -> Result<(i32, String, String)> {
        let mut v = vec!["--etcd", &self.etcd];
        v.extend_from_slice(args);
        self.k.status(&v)
    }

    pub fn socket(&self) -> std::path::PathBuf {
        netns_tests::cluster::agent_socket(&self.k)
    }

    /// Starts the agent and waits for its API socket.
    pub fn start_agent(&mut self) -> Result<()> {
        self.start_agent_with(&[])
    }

    /// [`Self::start_agent`] with more agent flags.
    pub fn start_agent_with(&mut self, extra: &[&str]) -> Result<()> {
        let mut flags = vec![
            "--lease-ttl",
            "3",
            "--reconcile-interval",
            "1",
            "--metrics",
            "127.0.0.1:9464",
        ];
        flags.extend_from_slice(extra);
        let wait = Duration::from_secs(20);
        let child = netns_tests::cluster::spawn_agent(
            &self.k,
            &self.etcd,
            &self.name,
            self.underlay,
            &flags,
            wait,
        )?;
        self.agent = Some(child);
        Ok(())
    }

    /// SIGTERM, and wait for the agent to exit; its exit status.
    pub fn stop_agent(&mut self) -> Result<std::process::ExitStatus> {
        let mut c = self.agent.take().context("no agent running")?;
        // SAFETY: kill(2) on the pid of a child we own and have not reaped.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        Ok(c.wait()?)
    }

    /// kill -9, as a crash.
    pub fn kill_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    pub fn sh(&self, cmd: &str) -> Result<String> {
        self.k.ns.stdout(&["sh", "-c", cmd])
    }

    /// The agent's metrics page (from inside the host).
    pub fn metrics(&self) -> Result<String> {
        let got = self.k.ns.ns().run_in(|| -> std::io::Result<String> {
            let mut s = TcpStream::connect("127.0.0.1:9464")?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })??;
        Ok(got)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill_agent();
    }
}

/// What the scripted controller saw of one host.
#[derive(Default)]
struct Peer {
    stream: Option<TcpStream>,
    hellos: Vec<Option<u64>>,
    acked: Option<u64>,
}

#[derive(Default)]
struct Seen {
    peers: HashMap<String, Peer>,
}

pub struct Controller {
    seen: Arc<(Mutex<Seen>, Condvar)>,
}

fn write_msg(s: &mut TcpStream, m: &ControllerMsg) -> std::io::Result<()> {
    let body = serde_json::to_vec(m).map_err(std::io::Error::other)?;
    let mut buf = (body.len() as u32).to_be_bytes().to_vec();
    buf.extend_from_slice(&body);
    s.write_all(&buf)
}

fn read_msg(s: &mut TcpStream) -> Option<AgentMsg> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

impl Controller {
    fn start(listener: TcpListener, not_leader: Option<String>) -> Controller {
        let seen: Arc<(Mutex<Seen>, Condvar)> = Arc::default();
        let s2 = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let seen = s2.clone();
                let not_leader = not_leader.clone();
                std::thread::spawn(move || {
                    let Some(AgentMsg::Hello { host, version, .. }) = read_msg(&mut conn) else {
                        return;
                    };
                    {
                        let (m, cv) = &*seen;
                        let mut g = m.lock().unwrap();
                        let p = g.peers.entry(host.clone()).or_default();
                        p.stream = conn.try_clone().ok();
                        p.hellos.push(version);
                        cv.notify_all();
                    }
                    if let Some(leader) = not_leader {
                        let m = ControllerMsg::NotLeader {
                            leader: Some(leader),
                        };
                        let _ = write_msg(&mut conn, &m);
                        return;
                    }
                    while let Some(msg) = read_msg(&mut conn) {
                        if let AgentMsg::Ack { version } = msg {
                            let (m, cv) = &*seen;
                            m.lock()
                                .unwrap()
                                .peers
                                .entry(host.clone())
                                .or_default()
                                .acked = Some(version);
                            cv.notify_all();
                        }
                    }
                });
            }
        });
        Controller { seen }
    }

    fn wait<T>(&self, what: &str, f: impl Fn(&Seen) -> Option<T>) -> Result<T> {
        let (m, cv) = &*self.seen;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut g = m.lock().unwrap();
        loop {
            if let Some(v) = f(&g) {
                return Ok(v);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("scripted controller: timed out waiting for {what}");
            }
            g = cv.wait_timeout(g, left).unwrap().0;
        }
    }

    /// Waits for hello number `n` (1-based) of `host`; the version it said it holds.
    pub fn hello(&self, host: &str, n: usize) -> Result<Option<u64>> {
        self.wait(&format!("hello {n} of {host}"), |s| {
            s.peers.get(host).and_then(|p| p.hellos.get(n - 1).copied())
        })
    }

    /// Sends `m` on the latest stream of `host` and waits for its ack of `version`.
    pub fn push(&self, host: &str, m: &ControllerMsg, version: u64) -> Result<()> {
        self.send(host, m)?;
        self.wait(&format!("ack {version} from {host}"), |s| {
            s.peers
                .get(host)
                .and_then(|p| p.acked)
                .filter(|a| *a == version)
        })?;
        Ok(())
    }

    /// Sends `m` on the latest stream of `host`.
    pub fn send(&self, host: &str, m: &ControllerMsg) -> Result<()> {
        let mut s = {
            let g = self.seen.0.lock().unwrap();
            g.peers
                .get(host)
                .and_then(|p| p.stream.as_ref())
                .context("no stream from that host")?
                .try_clone()?
        };
        write_msg(&mut s, m).with_context(|| format!("sending to {host}"))?;
        Ok(())
    }
}

/// `network inspect` of an etcd network: its id and VNI.
pub fn network_id_vni(h: &Host, name: &str) -> Result<(String, u32)> {
    let v: Value = serde_json::from_str(&h.knit(&["network", "inspect", name])?)?;
    let id = v[0]["Id"].as_str().context("Id")?.to_string();
    let vni = v[0]["VNI"].as_u64().context("VNI")? as u32;
    Ok((id, vni))
}
