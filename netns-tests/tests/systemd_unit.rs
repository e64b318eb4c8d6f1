//! The agent's systemd unit as `make install` writes it passes `systemd-analyze verify`, and
//! says what the issue asks: ordered before docker.service, restarted on failure, running
//! `knit agent`.

use std::process::Command;

use anyhow::{ensure, Context, Result};

#[test]
fn the_agent_unit_installs_and_verifies() -> Result<()> {
    let root = netns_tests::workspace_root();
    let dest = netns_tests::scenario::TempDir::new("unit")?;
    let prefix = dest.path().join("usr");
    // `make install` needs a build; the unit alone is rendered the same way here.
    let tmpl = std::fs::read_to_string(root.join("contrib/systemd/knit-agent.service.in"))?;
    let bindir = prefix.join("bin");
    std::fs::create_dir_all(&bindir)?;
    // verify checks that ExecStart's binary exists and is executable.
    std::fs::copy("/bin/true", bindir.join("knit"))?;
    let unit = tmpl.replace("@BINDIR@", &bindir.display().to_string());
    ensure!(!unit.contains('@'), "unrendered placeholder in:\n{unit}");
    for want in ["Before=docker.service", "Restart=on-failure", " agent "] {
        ensure!(unit.contains(want), "the unit lacks {want:?}");
    }
    let path = dest.path().join("knit-agent.service");
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
        .filter(|l| l.contains("knit-agent.service"))
        .collect();
    ensure!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify failed ({}):\n{err}",
        out.status
    );
    // And the Makefile installs this very template.
    let mk = std::fs::read_to_string(root.join("Makefile"))?;
    ensure!(
        mk.contains("contrib/systemd/knit-agent.service.in") && mk.contains("knit-agent.service"),
        "make install does not install the unit"
    );
    Ok(())
}
