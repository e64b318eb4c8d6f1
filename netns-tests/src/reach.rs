//! Reachability probes between test namespaces: ping (iputils), a TCP connect that reads a
//! greeting, a UDP echo, and the listeners that answer them. Sockets are made inside the
//! namespace on a short-lived thread (`NetNs::run_in`) and stay bound to it afterwards.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::topology::TestNs;

/// What listeners answer, so a probe knows it reached ours.
pub const GREETING: &[u8] = b"knit-harness\n";

/// `ping -c1 -W1 ADDR` from `ns`, retried until `within` (IPv6 DAD can hold an address
/// tentative for a second or two).
pub fn ping(ns: &TestNs, addr: IpAddr, within: Duration) -> Result<()> {
    ping_from(ns, addr, None, within)
}

/// `ping -c1 -W1 [-I SRC] ADDR` from `ns`, retried until `within`.
pub fn ping_from(ns: &TestNs, addr: IpAddr, src: Option<IpAddr>, within: Duration) -> Result<()> {
    let started = Instant::now();
    let mut args = vec!["-n".to_string(), "-c1".into(), "-W1".into()];
    if let Some(src) = src {
        args.extend(["-I".to_string(), src.to_string()]);
    }
    args.push(addr.to_string());
    loop {
        let out = ns
            .command("ping")
            .args(&args)
            .output()
            .context("spawn ping")?;
        if out.status.success() {
            return Ok(());
        }
        if started.elapsed() >= within {
            bail!(
                "ping {addr} from {} failed: {}",
                ns.name(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Connect to `to` over TCP from inside `ns` and read the listener's greeting.
pub fn tcp_probe(ns: &TestNs, to: SocketAddr, timeout: Duration) -> Result<()> {
    let got = ns.ns().run_in(move || -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect_timeout(&to, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        Ok(buf)
    })?;
    let buf = got.with_context(|| format!("tcp {to} from {}", ns.name()))?;
    if buf != GREETING {
        bail!("tcp {to} from {}: unexpected answer {buf:?}", ns.name());
    }
    Ok(())
}

/// Send a datagram to `to` from inside `ns` and wait for the echo.
pub fn udp_probe(ns: &TestNs, to: SocketAddr, timeout: Duration) -> Result<()> {
    let got = ns.ns().run_in(move || -> std::io::Result<Vec<u8>> {
        let bind: SocketAddr = if to.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        let s = UdpSocket::bind(bind)?;
        s.set_read_timeout(Some(Duration::from_millis(300)))?;
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 64];
        loop {
            s.send_to(GREETING, to)?;
            match s.recv(&mut buf) {
                Ok(n) => return Ok(buf[..n].to_vec()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => {}
            }
        }
    })?;
    let buf = got.with_context(|| format!("udp {to} from {}", ns.name()))?;
    if buf != GREETING {
        bail!("udp {to} from {}: unexpected echo {buf:?}", ns.name());
    }
    Ok(())
}

/// A TCP greeter or UDP echo server inside a namespace; stopped on drop.
#[derive(Debug)]
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl Listener {
    /// Listen on TCP `addr` inside `ns`; every connection gets [`GREETING`] and is closed.
    pub fn tcp(ns: &TestNs, addr: SocketAddr) -> Result<Listener> {
        let sock = ns.ns().run_in(move || TcpListener::bind(addr))??;
        sock.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match sock.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.write_all(GREETING);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Listener {
            stop,
            thread: Some(thread),
            addr,
        })
    }

    /// Echo datagrams on UDP `addr` inside `ns`.
    pub fn udp(ns: &TestNs, addr: SocketAddr) -> Result<Listener> {
        let sock = ns.ns().run_in(move || UdpSocket::bind(addr))??;
        sock.set_read_timeout(Some(Duration::from_millis(20)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        Ok(Listener {
            stop,
            thread: Some(thread),
            addr,
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
