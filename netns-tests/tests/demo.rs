//! `make demo`'s main job runs as the README promises: scripts/demo-cluster.sh (a local etcd,
//! two controllers, three host namespaces with agents, overlay and bridge networks, CNI
//! attachments, cross-host ping, names across hosts, a port mapping, isolation, the topology)
//! exits 0 in under a minute and reports that nothing was left behind.
#![cfg(feature = "root-tests")]

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};

#[test]
fn the_cluster_demo_runs_and_leaves_nothing() -> Result<()> {
    netns_tests::require_root();
    let root = netns_tests::workspace_root();
    let t = Instant::now();
    let out = Command::new("bash")
        .arg(root.join("scripts/demo-cluster.sh"))
        .env("KNIT", netns_tests::knit_bin()?)
        .output()?;
    let took = t.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "demo failed ({}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "c1 -> c3",
        "r2 -> c3: no answer",
        "hello from web on h1",
        "nothing left behind",
        "demo (cluster): OK",
    ] {
        ensure!(text.contains(want), "{want:?} missing in:\n{text}");
    }
    ensure!(took < Duration::from_secs(60), "the demo took {took:?}");
    Ok(())
}
