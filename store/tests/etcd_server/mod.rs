//! A real etcd for a test: apt's `/usr/bin/etcd` on free loopback ports with its own data dir,
//! killed and removed on drop. A missing etcd fails the test (install it: scripts/deps.sh).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use store::EtcdStore;

pub const ETCD: &str = "/usr/bin/etcd";

pub struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub url: String,
    client_port: u16,
    peer_port: u16,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl EtcdServer {
    /// Starts etcd and waits until it answers `/health`.
    pub fn start() -> EtcdServer {
        assert!(
            std::path::Path::new(ETCD).exists(),
            "{ETCD} is missing: the etcd store's tests need apt's etcd-server (scripts/deps.sh)"
        );
        let dir = tempfile::tempdir().expect("temp dir for etcd");
        let mut s = EtcdServer {
            child: None,
            dir,
            url: String::new(),
            client_port: free_port(),
            peer_port: free_port(),
        };
        s.url = format!("http://127.0.0.1:{}", s.client_port);
        s.restart();
        s
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// Starts etcd again on the same ports and data (after [`Self::stop`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("etcd log");
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(ETCD)
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &self.url])
            .args(["--advertise-client-urls", &self.url])
            .args(["--listen-peer-urls", &peer])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if self.healthy() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("etcd exited with {status}:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "etcd at {} not healthy after 30 s:\n{}",
            self.url,
            self.log_tail()
        );
    }

    fn log_tail(&self) -> String {
        let all = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn healthy(&self) -> bool {
        let Ok(mut c) = TcpStream::connect(("127.0.0.1", self.client_port)) else {
            return false;
        };
        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
        if c.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out.contains("\"health\":\"true\"")
    }

    /// Kills etcd (SIGKILL) and waits for it; the data stays for [`Self::restart`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A store on this etcd under `prefix`.
    pub fn store(&self, prefix: &str) -> EtcdStore {
        EtcdStore::connect(std::slice::from_ref(&self.url), prefix).expect("connect to etcd")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}
