//! The agent's and the controller's systemd units as `make install` writes them pass
//! `systemd-analyze verify`, and say what the issues ask: the agent ordered before
//! docker.service, both restarted on failure, running `knit agent` / `knit controller`.

use std::process::Command;

use anyhow::{ensure, Context, Result};

#[test]
fn the_agent_unit_installs_and_verifies() -> Result<()> {
    unit_installs_and_verifies(
        "knit-agent",
        &["Before=docker.service", "Restart=on-failure", " agent "],
    )
}

#[test]
fn the_controller_unit_installs_and_verifies() -> Result<()> {
    unit_installs_and_verifies(
        "knit-controller",
        &[
            "Restart=on-failure",
            " controller ",
            "--etcd ${KNIT_ETCD}",
            "--listen ${KNIT_LISTEN}",
        ],
    )
}

fn unit_installs_and_verifies(name: &str, wants: &[&str]) -> Result<()> {
    let root = netns_tests::workspace_root();
    let dest = netns_tests::scenario::TempDir::new("unit")?;
    let prefix = dest.path().join("usr");
    // `make install` needs a build; the unit alone is rendered the same way here.
    let tmpl = std::fs::read_to_string(root.join(format!("contrib/systemd/{name}.service.in")))?;
    let bindir = prefix.join("bin");
    std::fs::create_dir_all(&bindir)?;
    // verify checks that ExecStart's binary exists and is executable.
    std::fs::copy("/bin/true", bindir.join("knit"))?;
    let unit = tmpl.replace("@BINDIR@", &bindir.display().to_string());
    ensure!(!unit.contains('@'), "unrendered placeholder in:\n{unit}");
    for want in wants {
        ensure!(unit.contains(want), "the unit lacks {want:?}");
    }
    let path = dest.path().join(format!("{name}.service"));
    std::fs::write(&path, &unit)?;
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .context("systemd-analyze (apt systemd) is missing")?;
    let err = String::from_utf8_lossy(&out.stderr);
    // Complaints about other units (docker.service is not installed here) are not ours.
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains(&format!("{name}.service")))
        .collect();
    ensure!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify failed ({}):\n{err}",
        out.status
    );
    // And the Makefile installs this very template.
    let mk = std::fs::read_to_string(root.join("Makefile"))?;
    ensure!(
        mk.contains(&format!("contrib/systemd/{name}.service.in"))
            && mk.contains(&format!("{name}.service")),
        "make install does not install the unit"
    );
    Ok(())
}
