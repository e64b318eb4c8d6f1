//! One knit network, two runtimes: a Docker container (knit's agent as network + IPAM plugin)
//! and a podman container (podman 4.3's CNI backend running knit's CNI plugins) on the same
//! bridge get distinct addresses from the same reservations and talk to each other.
//!
//! The Docker network names its bridge (`-o com.docker.network.bridge.name=`); podman's network
//! of the same name is a conflist on that bridge, so its host-local IPAM opens
//! `/var/lib/cni/networks/NAME`, which the agent made an alias of the Docker pool's directory.
#![cfg(feature = "root-tests")]

// A module shared by several test crates: each uses only part of it.
#[allow(dead_code)]
#[path = "common/podman.rs"]
mod podman_env;

use anyhow::{ensure, Result};
use netns_tests::docker::{DockerHost, IMAGE};
use podman_env::*;

const SUBNET: &str = "10.244.64.0/24";

#[test]
fn docker_and_podman_containers_share_a_knit_network() -> Result<()> {
    let mut h = DockerHost::start("dp")?;
    h.cni_data_dir = "/var/lib/cni/networks".into();
    h.start_agent(&[])?;
    let name = format!("shared{}", std::process::id());
    let bridge = format!("ks{}", std::process::id());
    let opt = format!("com.docker.network.bridge.name={bridge}");
    h.knit_network(&name, SUBNET, &["-o", &opt])?;
    // The agent learns the name and makes the alias.
    let alias = std::path::Path::new("/var/lib/cni/networks").join(&name);
    let t = std::time::Instant::now();
    while alias.symlink_metadata().is_err() {
        ensure!(
            t.elapsed().as_secs() < 10,
            "no alias {}: {}",
            alias.display(),
            h.agent_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let mut pm = Podman::new_at(&h.ns.path().display().to_string(), &cni_bin_dir())?;
    pm.import_busybox(IMAGE, "hello\n")?;
    pm.network_on_bridge(&name, SUBNET, &bridge)?;

    h.docker(&[
        "run", "-d", "--name", "dc", "--net", &name, IMAGE, "sleep", "600",
    ])?;
    let pc = pm.run_container(&unique("pc"), &name, &[], &[IMAGE, "sleep", "600"])?;
    let f = format!("{{{{(index .NetworkSettings.Networks \"{name}\").IPAddress}}}}");
    let dip = h.docker(&["inspect", "-f", &f, "dc"])?;
    ensure!(dip != pc.ip, "Docker and podman both got {dip}");
    let ping = |from: &str, to: &str| -> Result<bool> {
        Ok(
            h.docker_raw(&["exec", from, "ping", "-c", "1", "-W", "1", to])?
                .status
                .success(),
        )
    };
    ensure!(
        ping("dc", &pc.ip)?,
        "the Docker container cannot reach podman's ({})",
        pc.ip
    );
    let back = pm.run(&["exec", &pc.name, "ping", "-c", "1", "-W", "1", &dip]);
    ensure!(
        back.is_ok(),
        "podman's container cannot reach Docker's ({dip}): {back:?}"
    );
    // A second Docker container skips both addresses.
    h.docker(&[
        "run", "-d", "--name", "dc2", "--net", &name, IMAGE, "sleep", "600",
    ])?;
    let dip2 = h.docker(&["inspect", "-f", &f, "dc2"])?;
    ensure!(
        dip2 != dip && dip2 != pc.ip,
        "dc2 got a taken address {dip2}"
    );

    pm.run(&["rm", "-f", "-t", "0", &pc.name])?;
    pm.network_rm(&name)?;
    pm.close()?;
    h.docker(&["rm", "-f", "dc", "dc2"])?;
    h.docker(&["network", "rm", &name])?;
    ensure!(
        alias.symlink_metadata().is_err(),
        "{} outlived the network",
        alias.display()
    );
    let pool = std::path::Path::new("/var/lib/cni/networks").join("knit-pool-10.244.64.0-24");
    ensure!(!pool.exists(), "{} outlived the network", pool.display());
    Ok(())
}
