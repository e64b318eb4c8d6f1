//! `knit controller`: one replica of the SDN controller (`sdn_controller`). It writes nothing
//! but a lock in `--state-dir` (one controller per state dir); `--run-dir` is made and left
//! empty (no socket: agents reach the controller over TCP on `--listen`).

use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::cli::LogFormat;

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Serve agents on IP:PORT; also what the leader key in etcd says, so agents must reach it.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Serve Prometheus metrics on this address.
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// The leader lease's TTL in seconds: a dead leader is replaced about this long after it
    /// died (and a leader cut off from etcd leads this long).
    #[arg(long, default_value_t = sdn_controller::controller::LEASE_TTL.as_secs())]
    pub lease_ttl: u64,
    /// Log lines as text or JSON (stderr; filter with KNIT_LOG).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// One controller per state dir: an exclusive flock on `controller.lock`.
fn lock(state_dir: &Path) -> Result<File> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let path = state_dir.join("controller.lock");
    let f = File::create(&path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "another knit controller uses {} ({} is locked)",
            state_dir.display(),
            path.display()
        );
    }
    Ok(f)
}

/// `etcd`/`prefix`: the global `--etcd` (required here) and `--etcd-prefix`.
pub fn run(
    state_dir: &Path,
    run_dir: &Path,
    etcd: &[String],
    prefix: &str,
    a: &ControllerArgs,
) -> Result<i32> {
    crate::agent::init_logs(a.log_format);
    if etcd.is_empty() {
        bail!("knit controller needs --etcd URL (the cluster's etcd)");
    }
    let _lock = lock(state_dir)?;
    std::fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    sdn_controller::run(sdn_controller::Config {
        etcd: etcd.to_vec(),
        prefix: prefix.to_string(),
        listen: a.listen,
        metrics: a.metrics,
        lease_ttl: std::time::Duration::from_secs(a.lease_ttl.max(2)),
    })
    .context("knit controller")?;
    Ok(0)
}
