//! Test namespaces: `knt-<pid>-<tag><n>`, created like `ip netns add` and deleted on drop, and
//! commands run inside them by `setns` in the child before exec (cheaper and fairer than
//! `ip netns exec`, which also remounts /sys).

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};
use libnet::netlink::Handle;
use libnet::netns::{NetNs, NETNS_RUN_DIR};

static NEXT: AtomicU32 = AtomicU32::new(1);

/// A named network namespace owned by a test; deleted (unmounted and unlinked) on drop.
#[derive(Debug)]
pub struct TestNs {
    name: String,
    ns: Option<NetNs>,
}

impl TestNs {
    /// A fresh namespace named `knt-<pid>-<tag><n>` with `lo` up.
    pub fn new(tag: &str) -> Result<TestNs> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("knt-{}-{tag}{n}", std::process::id());
        let ns = NetNs::create_named(&name).with_context(|| format!("create netns {name}"))?;
        let me = TestNs { name, ns: Some(ns) };
        let h = me.handle()?;
        let lo = h.link_by_name("lo").context("find lo")?;
        h.set_up(lo.index, true).context("set lo up")?;
        Ok(me)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, what CNI_NETNS takes.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_RUN_DIR).join(&self.name)
    }

    pub fn ns(&self) -> &NetNs {
        self.ns.as_ref().expect("namespace is open until drop")
    }

    /// A netlink socket inside this namespace.
    pub fn handle(&self) -> Result<Handle> {
        Handle::new_in(self.ns()).with_context(|| format!("netlink socket in {}", self.name))
    }

    /// A command that will run inside this namespace (setns in the child before exec).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        enter_in_child(&mut cmd, self.ns());
        cmd
    }

    /// Run `argv` inside the namespace and return its output, failing on a non-zero exit.
    pub fn run(&self, argv: &[&str]) -> Result<Output> {
        let (prog, args) = argv.split_first().context("empty argv")?;
        let out = self
            .command(prog)
            .args(args)
            .output()
            .with_context(|| format!("spawn {prog} in {}", self.name))?;
        if !out.status.success() {
            bail!(
                "{} in {}: {}: {}",
                argv.join(" "),
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }

    /// Run `argv` inside the namespace and return its stdout as text.
    pub fn stdout(&self, argv: &[&str]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.run(argv)?.stdout).into_owned())
    }

    /// A sysctl's value inside this namespace (`sysctl -n KEY`), `None` when it does not exist.
    pub fn sysctl(&self, key: &str) -> Result<Option<String>> {
        let key = key.to_string();
        let got = self.ns().run_in(move || libnet::sysctl::get(&key))?;
        Ok(got.ok().map(|v| v.trim().to_string()))
    }

    /// Set a sysctl inside this namespace.
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        let (k, v) = (key.to_string(), value.to_string());
        self.ns()
            .run_in(move || libnet::sysctl::set(&k, &v))?
            .with_context(|| format!("sysctl {key}={value} in {}", self.name))?;
        Ok(())
    }

    /// Delete the namespace now (as a runtime does when the container is gone) and keep the
    /// value around so callers can still use its name/path.
    pub fn delete(&mut self) -> Result<()> {
        self.ns = None;
        NetNs::delete_named(&self.name).with_context(|| format!("delete netns {}", self.name))
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        self.ns = None;
        if let Err(e) = NetNs::delete_named(&self.name) {
            eprintln!("netns-tests: leaked netns {}: {e}", self.name);
        }
    }
}

/// Make `cmd` enter `ns` in the child between fork and exec.
pub fn enter_in_child(cmd: &mut Command, ns: &NetNs) {
    let fd = ns.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only calls setns(2), which is
    // async-signal-safe; `fd` stays open in the child because it is inherited until exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
