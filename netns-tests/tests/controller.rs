//! `knit controller` end to end, on loopback (no root): a real etcd, two controller processes
//! (target/release/knit), and a test agent speaking the protocol. One replica leads (its
//! metrics gauge, the leader key), the other answers `NotLeader` naming it; the agent gets a
//! full state, then deltas as endpoints are put and deleted through `EtcdStore`, none for its
//! own endpoints; `kill -9` of the leader → the standby leads within a few seconds and the
//! agent, reconnecting to the address in the leader key, gets the right state.
//!
//! It runs the release binaries, so it runs with the other binary tests (`make test-netns`,
//! feature `root-tests`, after `make build`), not in the unit tier.
#![cfg(feature = "root-tests")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use netns_tests::etcd::EtcdServer;
use netns_tests::scenario::TempDir;
use overlay_vxlan::HostDesired;
use sdn_controller::proto::{apply_changes, AgentMsg, Change, ControllerMsg, PROTOCOL};
use store::etcd::Host;
use store::{Driver, Endpoint, EtcdStore, Network, Pool, Store};

fn free_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

struct Controller {
    child: Child,
    listen: SocketAddr,
    metrics: SocketAddr,
    log: std::path::PathBuf,
}

impl Controller {
    fn start(dir: &TempDir, name: &str, etcd: &str, prefix: &str) -> Result<Controller> {
        let (listen, metrics) = (free_addr()?, free_addr()?);
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d)?;
        let log = d.join("log");
        let child = Command::new(netns_tests::knit_bin()?)
            .arg("controller")
            .args(["--etcd", etcd, "--etcd-prefix", prefix])
            .args(["--listen", &listen.to_string()])
            .args(["--metrics", &metrics.to_string()])
            .arg("--state-dir")
            .arg(d.join("state"))
            .arg("--run-dir")
            .arg(d.join("run"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawn knit controller")?;
        Ok(Controller {
            child,
            listen,
            metrics,
            log,
        })
    }

    /// The value of one metric line (`NAME VALUE`), if the endpoint answers.
    fn metric(&self, name: &str) -> Option<f64> {
        let mut c = TcpStream::connect_timeout(&self.metrics, Duration::from_secs(1)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut out = String::new();
        c.read_to_string(&mut out).ok()?;
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
    }

    fn leads(&self) -> bool {
        self.metric("knit_controller_leader") == Some(1.0)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test agent: frames over a plain socket.
struct Agent {
    conn: TcpStream,
}

impl Agent {
    fn hello(addr: SocketAddr, host: &str, version: Option<u64>) -> Result<Agent> {
        let conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut a = Agent { conn };
        a.send(&AgentMsg::Hello {
            protocol: PROTOCOL,
            host: host.into(),
            version,
        })?;
        Ok(a)
    }

    fn send(&mut self, m: &AgentMsg) -> Result<()> {
        let body = serde_json::to_vec(m)?;
        self.conn.write_all(&(body.len() as u32).to_be_bytes())?;
        self.conn.write_all(&body)?;
        Ok(())
    }

    fn recv(&mut self) -> Result<ControllerMsg> {
        let mut len = [0u8; 4];
        self.conn.read_exact(&mut len).context("reading a frame")?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.conn.read_exact(&mut body)?;
        Ok(serde_json::from_slice(&body)?)
    }

    /// The next message within `wait`, or None.
    fn recv_within(&mut self, wait: Duration) -> Result<Option<ControllerMsg>> {
        self.conn.set_read_timeout(Some(wait))?;
        let mut len = [0u8; 1];
        let got = match self.conn.peek(&mut len) {
            Ok(n) => n > 0,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                false
            }
            Err(e) => return Err(e.into()),
        };
        self.conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        if got {
            self.recv().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Applies the next delta to `state`, which is at `*version`; returns its changes.
    fn delta(&mut self, state: &mut HostDesired, version: &mut u64) -> Result<Vec<Change>> {
        match self.recv()? {
            ControllerMsg::Delta {
                base,
                version: v,
                changes,
            } => {
                ensure!(base == *version, "delta from {base}, agent at {version}");
                apply_changes(state, &changes);
                *version = v;
                self.send(&AgentMsg::Ack { version: v })?;
                Ok(changes)
            }
            other => bail!("expected a delta, got {other:?}"),
        }
    }
}

fn endpoint(net: &str, host: &str, ip: &str, last: u8) -> Endpoint {
    let mut e = Endpoint::new(net);
    e.name = format!("c{last}");
    e.host = host.into();
    e.mac = format!("0a:58:0a:4d:01:{last:02x}");
    e.ipv4 = Some(format!("{ip}/16").parse().unwrap());
    e
}

fn ips(state: &HostDesired) -> Vec<String> {
    let mut v: Vec<String> = state
        .networks
        .iter()
        .flat_map(|n| n.endpoints.iter().map(|e| format!("{}@{}", e.ip, e.host)))
        .collect();
    v.sort();
    v
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what}: not within {limit:?}")
}

#[test]
fn one_leader_streams_deltas_and_a_standby_takes_over_after_kill_9() -> Result<()> {
    let etcd = EtcdServer::start()?;
    let prefix = format!("/knit-ctl-{}", std::process::id());
    let st = EtcdStore::connect(std::slice::from_ref(&etcd.url), &prefix)?;
    let mut net = Network::new("ov", Driver::Overlay);
    let mut pool = Pool::new("10.77.0.0/16".parse()?);
    pool.gateway = Some("10.77.0.1".parse()?);
    net.ipam.push(pool);
    st.create_network(&net)?;
    let vni = st.allocate_vni(&net.id)?;
    let host = |name: &str, ip: &str| Host {
        name: name.into(),
        underlay_ip: ip.parse().unwrap(),
        vtep_mac: "02:00:00:00:00:01".into(),
    };
    let h1 = st.register_host(&host("h1", "192.168.77.1"), Duration::from_secs(10))?;
    let _h2 = st.register_host(&host("h2", "192.168.77.2"), Duration::from_secs(10))?;
    // Only members of a network hold it: h1 holds a block (as its agent claims at its first
    // ADD), h2 is a member by its endpoints.
    st.claim_block(&h1, &net.id, 26)?;
    let e1 = endpoint(&net.id, "h2", "10.77.1.5", 5);
    st.put_endpoint(&e1)?;

    let dir = TempDir::new("controller")?;
    let mut a = Controller::start(&dir, "a", &etcd.url, &prefix)?;
    wait_for("controller a leads", Duration::from_secs(10), || a.leads())
        .with_context(|| a.log())?;
    let mut b = Controller::start(&dir, "b", &etcd.url, &prefix)?;
    wait_for("controller b answers", Duration::from_secs(10), || {
        b.metric("knit_controller_leader") == Some(0.0)
    })
    .with_context(|| b.log())?;
    ensure!(a.leads(), "a still leads");
    assert_eq!(st.leader()?, Some(a.listen.to_string()), "the leader key");

    // The standby names the leader.
    let mut to_b = Agent::hello(b.listen, "h1", None)?;
    assert_eq!(
        to_b.recv()?,
        ControllerMsg::NotLeader {
            leader: Some(a.listen.to_string())
        }
    );

    // The leader: a full state, then deltas.
    let mut agent = Agent::hello(a.listen, "h1", None)?;
    let (mut version, mut state) = match agent.recv()? {
        ControllerMsg::Full { version, state } => (version, state),
        other => bail!("expected a full state, got {other:?}"),
    };
    agent.send(&AgentMsg::Ack { version })?;
    assert_eq!(state.networks.len(), 1);
    let n = &state.networks[0];
    assert_eq!((n.id.as_str(), n.vni), (net.id.as_str(), vni));
    assert_eq!(n.underlay_ip.to_string(), "192.168.77.1");
    assert_eq!(n.subnets[0].gateway, Some("10.77.0.1".parse()?));
    assert_eq!(ips(&state), ["10.77.1.5@192.168.77.2"]);
    assert_eq!(n.hosts.len(), 1);
    assert_eq!(n.hosts[0].underlay_ip.to_string(), "192.168.77.2");
    ensure!(n.hosts[0].blocks.is_empty(), "h2 holds no block");

    let e2 = endpoint(&net.id, "h2", "10.77.1.6", 6);
    st.put_endpoint(&e2)?;
    let c = agent.delta(&mut state, &mut version)?;
    assert!(
        matches!(&c[..], [Change::EndpointPut { endpoint, .. }] if endpoint.ip.to_string() == "10.77.1.6"),
        "{c:?}"
    );
    st.delete_endpoint(&e1.id)?;
    let c = agent.delta(&mut state, &mut version)?;
    assert!(
        matches!(&c[..], [Change::EndpointDel { ip, .. }] if ip.to_string() == "10.77.1.5"),
        "{c:?}"
    );
    // h1's own endpoint concerns h1 not: the next delta is the one after it.
    st.put_endpoint(&endpoint(&net.id, "h1", "10.77.1.7", 7))?;
    st.put_endpoint(&endpoint(&net.id, "h2", "10.77.1.8", 8))?;
    let c = agent.delta(&mut state, &mut version)?;
    assert!(
        matches!(&c[..], [Change::EndpointPut { endpoint, .. }] if endpoint.ip.to_string() == "10.77.1.8"),
        "{c:?}"
    );
    assert_eq!(
        ips(&state),
        ["10.77.1.6@192.168.77.2", "10.77.1.8@192.168.77.2"]
    );
    wait_for("a counts its frames", Duration::from_secs(5), || {
        a.metric("knit_controller_deltas_sent_total") == Some(3.0)
            && a.metric("knit_controller_full_syncs_sent_total") == Some(1.0)
            && a.metric("knit_controller_agents_connected") == Some(1.0)
    })?;

    // kill -9 the leader; etcd changes meanwhile.
    a.child.kill()?;
    a.child.wait()?;
    let killed = Instant::now();
    let e9 = endpoint(&net.id, "h2", "10.77.1.9", 9);
    st.put_endpoint(&e9)?;
    st.delete_endpoint(&e2.id)?;
    ensure!(agent.recv().is_err(), "the stream of a dead leader ends");
    let took =
        wait_for("b leads", Duration::from_secs(10), || b.leads()).with_context(|| b.log())?;
    eprintln!("standby leads {:?} after the kill -9", killed.elapsed());
    ensure!(took < Duration::from_secs(8), "takeover took {took:?}");
    let leader = st.leader()?.context("a leader in etcd")?;
    assert_eq!(leader, b.listen.to_string());

    // The agent reconnects with the old leader's version: a full state of the new term.
    let mut agent = Agent::hello(leader.parse()?, "h1", Some(version))?;
    let (v2, s2) = match agent.recv()? {
        ControllerMsg::Full { version, state } => (version, state),
        other => bail!("expected a full state, got {other:?}"),
    };
    ensure!(
        v2 > version,
        "versions grow across terms: {v2} after {version}"
    );
    assert_eq!(
        ips(&s2),
        ["10.77.1.8@192.168.77.2", "10.77.1.9@192.168.77.2"]
    );
    let (mut version, mut state) = (v2, s2);
    st.delete_endpoint(&e9.id)?;
    let c = agent.delta(&mut state, &mut version)?;
    assert!(
        matches!(&c[..], [Change::EndpointDel { ip, .. }] if ip.to_string() == "10.77.1.9"),
        "{c:?}"
    );
    ensure!(
        agent.recv_within(Duration::from_millis(300))?.is_none(),
        "nothing else"
    );
    // A leader stopped by SIGTERM hands over at once: its lease is revoked, the key is gone.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(b.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let status = b.child.wait()?;
    ensure!(
        status.success(),
        "controller b exited with {status}: {}",
        b.log()
    );
    wait_for("the leader key goes", Duration::from_secs(1), || {
        st.leader().is_ok_and(|l| l.is_none())
    })?;
    Ok(())
}
