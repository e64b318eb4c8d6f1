//! `knit run` and `knit sandbox ls|rm`: a sandbox is a named network namespace
//! (`/run/netns/knit-<12 hex of its id>`, visible to `ip netns`) with `lo` up and its endpoints
//! (eth0 from `run`, more from `network connect`), attached through libnet's endpoint lifecycle
//! with the network's driver and the addresses of the host-local IPAM files that knit's CNI
//! `bridge` + `host-local` use for a network of the same name (one address space for both).
//!
//! Order of `run`: lease (`creating`, [`crate::lease`]) → sandbox record (a duplicate name
//! fails before anything exists) → namespace → `lo` up → endpoint record (intent) → attach (its
//! own rollback) → endpoint record whole ([`crate::connect`]) → lease `ready` (with `--name`)
//! → CMD. Any failure removes what this run made, newest first: the endpoints (detach through
//! the lifecycle), the namespace, the records, the lease. Without `--name` the same removal
//! follows CMD's exit, and the lease is held until then. The lifecycle's address source and
//! filters for a sandbox are put together in [`crate::attach`].

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use libnet::netlink::Handle;
use libnet::netns::{NetNs, NETNS_RUN_DIR};
use libnet::nft::{Nft, StateDir};
use serde_json::json;
use store::{Network, PortMap, Sandbox, Store};

use crate::cli::{Format, RunArgs};
use crate::connect::{attach_endpoint, detach_endpoint};
use crate::lease::{Lease, State};
use crate::network::port_string;
use crate::table;

/// The interface of a sandbox on its network.
pub const IFNAME: &str = "eth0";

/// Where the process-independent state lives.
#[derive(Debug, Clone)]
pub struct Dirs {
    pub run_dir: PathBuf,
    pub cni_data_dir: PathBuf,
}

impl Dirs {
    pub(crate) fn nft(&self) -> Nft {
        Nft::at(StateDir::new(self.run_dir.join("nft")))
    }
}

/// The namespace name of a sandbox: `knit-` and the first 12 hex digits of its id.
pub fn netns_name(sandbox_id: &str) -> String {
    format!("knit-{}", sandbox_id.get(..12).unwrap_or(sandbox_id))
}

/// What `run` needs once the sandbox is set up.
struct Made {
    sandbox: Sandbox,
    ns: NetNs,
    lease: Lease,
}

/// Where `knit run` puts CMD, from `--net`.
#[derive(Debug, PartialEq, Eq)]
enum NetMode<'a> {
    /// A new sandbox with `lo` only.
    None,
    /// The namespace knit runs in (Docker's host driver): no sandbox at all.
    Host,
    /// The namespace of an existing sandbox (Docker's `container:NAME`): no new sandbox.
    Container(&'a str),
    /// A new sandbox attached to this network.
    Network(&'a str),
}

fn net_mode(net: &str) -> NetMode<'_> {
    match net {
        "none" => NetMode::None,
        "host" => NetMode::Host,
        _ => match net.strip_prefix("container:") {
            Some(name) => NetMode::Container(name),
            None => NetMode::Network(net),
        },
    }
}

/// `knit run`: returns CMD's exit code (128 + signal if a signal ended it).
pub fn run(st: &dyn Store, dirs: &Dirs, a: &RunArgs) -> Result<i32> {
    match net_mode(&a.net) {
        NetMode::Host => {
            refuse_sandbox_flags(a, "--net host runs in the host's namespace")?;
            return exec_in(None, &a.cmd);
        }
        NetMode::Container(name) => {
            refuse_sandbox_flags(a, "--net container:NAME joins that sandbox's namespace")?;
            let sb = st.sandbox(name)?;
            let ns = NetNs::open(&sb.netns).with_context(|| {
                format!(
                    "opening the namespace {} of sandbox {:?}",
                    sb.netns.display(),
                    sb.name
                )
            })?;
            return exec_in(Some(&ns), &a.cmd);
        }
        NetMode::None | NetMode::Network(_) => {}
    }
    crate::repair::before_change(st, dirs);
    let net = if a.net == "none" {
        if a.ip.is_some() || !a.publish.is_empty() {
            bail!("--ip and -p need a network (--net none has only lo)");
        }
        None
    } else {
        Some(st.network(&a.net)?)
    };
    let publish = crate::ports::resolve(st, &a.publish)?;
    let mut made = create(st, dirs, net.as_ref(), a, &publish)?;
    if a.name.is_some() {
        // Kept: set up whole, and free to be connected or removed while CMD runs.
        made.lease.set(State::Ready)?;
        drop(made.lease);
        return exec_in(Some(&made.ns), &a.cmd);
    }
    // Without a name the lease is held (Creating) while CMD runs: a knit killed meanwhile
    // leaves a sandbox that the repair pass removes.
    let code = exec_in(Some(&made.ns), &a.cmd);
    let removed = remove(st, dirs, &made.sandbox);
    if removed.is_ok() {
        made.lease.remove();
    }
    let code = code?;
    removed?;
    Ok(code)
}

/// `--name`, `--ip` and `-p` belong to a new sandbox; host and container: make none.
fn refuse_sandbox_flags(a: &RunArgs, why: &str) -> Result<()> {
    if a.name.is_some()
        || a.ip.is_some()
        || !a.publish.is_empty()
        || !a.alias.is_empty()
        || !a.label.is_empty()
    {
        bail!(
            "{why}: --name, --ip, -p, --alias and --label need a new sandbox (--net NETWORK|none)"
        );
    }
    Ok(())
}

/// The sandbox, its namespace and its endpoint; nothing is left when it fails.
fn create(
    st: &dyn Store,
    dirs: &Dirs,
    net: Option<&Network>,
    a: &RunArgs,
    publish: &[PortMap],
) -> Result<Made> {
    let id = store::new_id();
    let ns_name = netns_name(&id);
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("run-{}", &id[..12]));
    let mut sb = Sandbox::new(name, Path::new(NETNS_RUN_DIR).join(&ns_name));
    sb.id = id;
    sb.aliases = a.alias.clone();
    sb.labels = a.label.iter().cloned().collect();
    // The lease comes first and goes last: from here on a kill -9 leaves a trace to repair.
    let mut lease = Lease::wait(dirs, &sb.id)?;
    lease.set(State::Creating)?;
    if let Err(e) = st.create_sandbox(&sb) {
        lease.remove();
        return Err(e).with_context(|| format!("creating sandbox {:?}", sb.name));
    }
    let ns = match NetNs::create_named(&ns_name) {
        Ok(ns) => ns,
        Err(e) => {
            match st.delete_sandbox(&sb.id) {
                Ok(_) => lease.remove(),
                Err(u) => eprintln!(
                    "knit: rolling back: could not remove sandbox {:?}: {u}",
                    sb.name
                ),
            }
            return Err(e).with_context(|| format!("creating namespace {ns_name}"));
        }
    };
    match setup(st, dirs, net, a, publish, &sb, &ns) {
        Ok(()) => Ok(Made {
            sandbox: sb,
            ns,
            lease,
        }),
        Err(e) => {
            drop(ns);
            if let Err(u) = remove(st, dirs, &sb) {
                return Err(e.context(format!("rolling back, also: {u:#}")));
            }
            lease.remove();
            Err(e)
        }
    }
}

fn setup(
    st: &dyn Store,
    dirs: &Dirs,
    net: Option<&Network>,
    a: &RunArgs,
    publish: &[PortMap],
    sb: &Sandbox,
    ns: &NetNs,
) -> Result<()> {
    let h = Handle::new_in(ns).context("opening a netlink socket in the sandbox")?;
    let lo = h
        .link_by_name("lo")
        .context("looking up lo in the sandbox")?;
    h.set_up(lo.index, true).context("setting lo up")?;
    let Some(net) = net else { return Ok(()) };
    let requested: Vec<IpAddr> = a.ip.into_iter().collect();
    attach_endpoint(st, dirs, net, sb, ns, IFNAME, requested, publish, true)?;
    Ok(())
}

/// Remove a sandbox: detach each endpoint through the lifecycle and drop its record, delete
/// the namespace, then the sandbox record. Every step is attempted; all failures are reported.
pub fn remove(st: &dyn Store, dirs: &Dirs, sb: &Sandbox) -> Result<()> {
    let mut errors: Vec<String> = Vec::new();
    let eps = st
        .sandbox_endpoints(&sb.id)
        .with_context(|| format!("listing the endpoints of sandbox {:?}", sb.name))?;
    let ns = NetNs::open(&sb.netns).ok();
    for ep in eps {
        if let Err(e) = detach_endpoint(st, dirs, sb, ns.as_ref(), &ep) {
            errors.push(format!("{e:#}"));
        }
    }
    drop(ns);
    let ns_name = sb
        .netns
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if sb.netns.parent() == Some(Path::new(NETNS_RUN_DIR)) && !ns_name.is_empty() {
        if let Err(e) = NetNs::delete_named(&ns_name) {
            errors.push(format!("namespace {ns_name}: {e}"));
        }
    }
    if errors.is_empty() {
        st.delete_sandbox(&sb.id)
            .with_context(|| format!("removing sandbox {:?}", sb.name))?;
        Ok(())
    } else {
        Err(anyhow!(
            "removing sandbox {:?} (its record is kept so `knit sandbox rm` can retry): {}",
            sb.name,
            errors.join("; ")
        ))
    }
}

/// Run `cmd` in `ns` (the child enters it before exec; `None`: knit's own) with the terminal's
/// stdio; returns its exit code, or 128 + the signal that ended it.
///
/// Meanwhile knit blocks SIGINT, SIGQUIT, SIGTERM and SIGHUP so that it lives to clean up: the
/// terminal's SIGINT/SIGQUIT reach the command directly (same process group), and a SIGTERM or
/// SIGHUP sent to knit is passed on to the command, whose exit then ends the run as usual.
fn exec_in(ns: Option<&NetNs>, cmd: &[String]) -> Result<i32> {
    let Some((prog, args)) = cmd.split_first() else {
        bail!("no command given");
    };
    let fd = ns.map(|ns| ns.as_raw_fd());
    let mut c = std::process::Command::new(prog);
    c.args(args);
    // SAFETY: between fork and exec only async-signal-safe calls (setns, sigemptyset,
    // pthread_sigmask) on an fd that stays open in the child until exec.
    unsafe {
        c.pre_exec(move || {
            if let Some(fd) = fd {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
    // SAFETY: a sigset_t filled by sigemptyset/sigaddset, applied to this thread only; threads
    // started after (the forwarder) inherit the mask. It stays blocked until knit exits.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let mut child = c
        .spawn()
        .map_err(|e| anyhow!(RunError::Spawn(prog.clone(), e)))?;
    let status =
        wait_forwarding(&mut child, &set).with_context(|| format!("waiting for {prog:?}"))?;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1))
}

/// Wait for `child`, passing SIGTERM and SIGHUP (blocked in `set`, so read here) on to it:
/// one `poll` over a pidfd of the child and a signalfd of `set`, so the exit is seen the
/// moment it happens (no timer, no thread).
fn wait_forwarding(
    child: &mut std::process::Child,
    set: &libc::sigset_t,
) -> io::Result<std::process::ExitStatus> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let pid = child.id() as libc::pid_t;
    // SAFETY: pidfd_open(2) on our own unreaped child; the fd is owned below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as libc::c_int;
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // SAFETY: set is a valid sigset_t; a new signalfd.
    let sfd = unsafe { libc::signalfd(-1, set, libc::SFD_CLOEXEC) };
    if sfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let sfd = unsafe { OwnedFd::from_raw_fd(sfd) };
    loop {
        let mut fds = [
            libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfd entries.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[1].revents & libc::POLLIN != 0 {
            // SAFETY: a zeroed plain C struct, filled by read(2) from the signalfd.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: info is a writable buffer of `size` bytes.
            let n = unsafe {
                libc::read(
                    sfd.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    size,
                )
            };
            let sig = info.ssi_signo as libc::c_int;
            if n == size as isize && (sig == libc::SIGTERM || sig == libc::SIGHUP) {
                // SAFETY: kill(2) on the child we spawned and have not reaped yet.
                unsafe { libc::kill(pid, sig) };
            }
        }
        if fds[0].revents & libc::POLLIN != 0 {
            return child.wait();
        }
    }
}

/// The command could not be started (exit 127 when not found, 126 otherwise, as a shell).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("starting {0:?}: {1}")]
    Spawn(String, #[source] io::Error),
}

impl RunError {
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Spawn(_, e) if e.kind() == io::ErrorKind::NotFound => 127,
            RunError::Spawn(..) => 126,
        }
    }
}

/// `knit sandbox rm NAME...`: each in turn, stopping at the first failure.
pub fn rm(st: &dyn Store, dirs: &Dirs, names: &[String]) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for n in names {
        let sb = st.sandbox(n)?;
        let mut lease = Lease::wait_for(dirs, &sb.id)?;
        lease.set(State::Removing)?;
        remove(st, dirs, &sb)?;
        lease.remove();
        done.push(sb.name);
    }
    Ok(done)
}

/// `knit sandbox ls`.
pub fn ls(st: &dyn Store, format: Format) -> Result<String> {
    let sbs = st.list_sandboxes().context("listing sandboxes")?;
    let nets = st.list_networks().context("listing networks")?;
    let net_name = |id: &str| {
        nets.iter()
            .find(|n| n.id == id)
            .map_or_else(|| id.to_string(), |n| n.name.clone())
    };
    let mut rows = Vec::new();
    let mut json_out = Vec::new();
    for sb in &sbs {
        let eps = st.sandbox_endpoints(&sb.id).context("listing endpoints")?;
        let addrs: Vec<String> = eps
            .iter()
            .flat_map(|e| e.ipv4.iter().chain(e.ipv6.iter()).map(|a| a.to_string()))
            .collect();
        let networks: Vec<String> = eps.iter().map(|e| net_name(&e.network_id)).collect();
        rows.push(vec![
            sb.id[..12.min(sb.id.len())].to_string(),
            sb.name.clone(),
            sb.netns.display().to_string(),
            if networks.is_empty() {
                "none".into()
            } else {
                networks.join(",")
            },
            addrs.join(","),
            eps.iter()
                .flat_map(|e| e.ports.iter().map(port_string))
                .collect::<Vec<_>>()
                .join(","),
        ]);
        json_out.push(json!({
            "Id": sb.id, "Name": sb.name, "Netns": sb.netns, "Created": sb.created,
            "Networks": eps.iter().map(|e| json!({
                "Network": net_name(&e.network_id), "EndpointID": e.id, "MacAddress": e.mac,
                "IPv4Address": e.ipv4.map(|a| a.to_string()).unwrap_or_default(),
                "IPv6Address": e.ipv6.map(|a| a.to_string()).unwrap_or_default(),
                "Ports": e.ports.iter().map(port_string).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }));
    }
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(&json_out).unwrap_or_default() + "\n",
        Format::Table => table::render(
            &[
                "SANDBOX ID",
                "NAME",
                "NETNS",
                "NETWORKS",
                "ADDRESSES",
                "PORTS",
            ],
            rows,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_modes_follow_docker() {
        assert_eq!(net_mode("none"), NetMode::None);
        assert_eq!(net_mode("host"), NetMode::Host);
        assert_eq!(net_mode("container:web"), NetMode::Container("web"));
        assert_eq!(net_mode("n1"), NetMode::Network("n1"));
    }

    #[test]
    fn namespace_names_are_short_and_derived() {
        let id = store::new_id();
        assert_eq!(netns_name(&id), format!("knit-{}", &id[..12]));
    }
}
