//! `knit run` and `knit sandbox ls|rm`: a sandbox is a named network namespace
//! (`/run/netns/knit-<12 hex of its id>`, visible to `ip netns`) with `lo` up and at most one
//! endpoint, attached through libnet's endpoint lifecycle with the bridge driver and the
//! addresses of the host-local IPAM files that knit's CNI `bridge` + `host-local` use for a
//! network of the same name (one address space for both).
//!
//! Order of `run`: sandbox record (a duplicate name fails before anything exists) → namespace →
//! `lo` up → attach (its own rollback) → endpoint record → CMD. Any failure removes what this
//! run made, newest first: the endpoint (detach through the lifecycle), the namespace, the
//! records. Without `--name` the same removal follows CMD's exit.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{anyhow, bail, Context, Result};
use ipnet::IpNet;
use libnet::driver::bridge::{Bridge, BridgeNet};
use libnet::driver::Wired;
use libnet::driver::{IpConf, RouteConf};
use libnet::endpoint::filters::Masq;
use libnet::endpoint::{self, boxed, AddressSource, Addressing, BoxError, Filter, Request};
use libnet::ipam::{self, FileStore, IpamConfig};
use libnet::netlink::Handle;
use libnet::netns::{NetNs, NETNS_RUN_DIR};
use libnet::nft::{
    route_localnet_key, IngressPolicy, Nft, PortMapping, Proto as NftProto, StateDir,
};
use libnet::sysctl;
use serde_json::{json, Value};
use store::{Driver, Endpoint, Network, PortMap, Sandbox, Store};

use crate::cli::{Format, RunArgs};
use crate::network::{bridge_name, masquerades, port_string};
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
    fn nft(&self) -> Nft {
        Nft::at(StateDir::new(self.run_dir.join("nft")))
    }
}

/// The namespace name of a sandbox: `knit-` and the first 12 hex digits of its id.
pub fn netns_name(sandbox_id: &str) -> String {
    format!("knit-{}", sandbox_id.get(..12).unwrap_or(sandbox_id))
}

/// The host-local IPAM configuration of a network: one range set per pool (dual stack), the
/// pool's gateway, its ip-range as rangeStart..rangeEnd, in `data_dir`.
pub fn ipam_config(net: &Network, data_dir: &Path) -> Result<IpamConfig> {
    let sets: Vec<Value> = net
        .ipam
        .iter()
        .map(|p| {
            let mut r = json!({"subnet": p.subnet.to_string()});
            if let Some(g) = p.gateway {
                r["gateway"] = json!(g.to_string());
            }
            if let Some(range) = p.ip_range {
                let (start, end) = range_bounds(&p.subnet, &range);
                r["rangeStart"] = json!(start.to_string());
                r["rangeEnd"] = json!(end.to_string());
            }
            json!([r])
        })
        .collect();
    let v = json!({"type": "host-local", "ranges": sets, "dataDir": data_dir});
    IpamConfig::from_json(&v)
        .with_context(|| format!("the address pools of network {:?}", net.name))
}

/// First and last address of `range`, without the subnet's network and IPv4 broadcast address.
fn range_bounds(subnet: &IpNet, range: &IpNet) -> (IpAddr, IpAddr) {
    let step = |a: IpAddr, up: bool| match a {
        IpAddr::V4(v) => {
            let n = u32::from(v);
            IpAddr::V4(
                if up {
                    n.saturating_add(1)
                } else {
                    n.saturating_sub(1)
                }
                .into(),
            )
        }
        IpAddr::V6(v) => {
            let n = u128::from(v);
            IpAddr::V6(
                if up {
                    n.saturating_add(1)
                } else {
                    n.saturating_sub(1)
                }
                .into(),
            )
        }
    };
    let mut start = range.network();
    if start == subnet.network() {
        start = step(start, true);
    }
    let mut end = range.broadcast();
    if end == subnet.broadcast() && end.is_ipv4() {
        end = step(end, false);
    }
    (start, end)
}

/// libnet's IPAM over the host-local files as the lifecycle's address source; the default
/// routes via the gateways unless the network is internal.
pub struct HostLocal {
    pub cfg: IpamConfig,
    pub network: String,
    pub requested: Vec<IpAddr>,
    pub default_route: bool,
}

impl HostLocal {
    fn store(&self) -> Result<FileStore, BoxError> {
        FileStore::open(&self.cfg.data_dir, &self.network).map_err(boxed)
    }
}

impl AddressSource for HostLocal {
    fn allocate(&mut self, req: &Request<'_>) -> Result<Addressing, BoxError> {
        let mut fs = self.store()?;
        let got = ipam::allocate(
            &mut fs,
            &self.cfg,
            req.container_id,
            req.ifname,
            &self.requested,
        )
        .map_err(boxed)?;
        let mut a = Addressing::default();
        for al in got {
            a.ips.push(IpConf {
                addr: al.address,
                gateway: al.gateway,
            });
            if self.default_route && al.gateway.is_some() {
                let any: IpNet = if al.address.addr().is_ipv4() {
                    IpNet::V4(Default::default())
                } else {
                    IpNet::V6(Default::default())
                };
                a.routes.push(RouteConf { dst: any, gw: None });
            }
        }
        Ok(a)
    }

    fn release(&mut self, req: &Request<'_>) -> Result<(), BoxError> {
        let mut fs = self.store()?;
        ipam::release(&mut fs, req.container_id, req.ifname).map_err(boxed)
    }
}

/// Docker's isolation between bridge networks: the endpoint's addresses are "same-bridge"
/// isolated in libnet's forward chain (the firewall feature's `iso` set), so traffic between
/// two isolated endpoints is dropped unless both are on the same bridge. Traffic to the host
/// and beyond it is not affected.
pub struct Isolation<'n> {
    pub nft: &'n Nft,
    pub bridge: String,
}

impl Filter for Isolation<'_> {
    fn name(&self) -> &'static str {
        "isolation"
    }

    fn ensure(&self, req: &Request<'_>, addrs: &Addressing, _: &Wired) -> Result<(), BoxError> {
        let ips: Vec<IpAddr> = addrs.ips.iter().map(|ip| ip.addr.addr()).collect();
        self.nft
            .ensure_firewall(
                &req.attachment(),
                &self.bridge,
                &ips,
                IngressPolicy::SameBridge,
            )
            .map_err(boxed)
    }

    fn del(&self, req: &Request<'_>) -> Result<(), BoxError> {
        self.nft.del_firewall(&req.attachment()).map_err(boxed)
    }
}

/// Published ports (`knit run -p`): DNAT elements in knit's nftables table to the endpoint's
/// first address of each family, and `route_localnet` on the bridge so 127.0.0.1 works too
/// (the `portmap` CNI plugin's way). `del` needs no mappings: it reads the elements' record.
pub struct Ports<'n> {
    pub nft: &'n Nft,
    pub bridge: String,
    pub maps: Vec<PortMapping>,
}

impl Filter for Ports<'_> {
    fn name(&self) -> &'static str {
        "portmap"
    }

    fn ensure(&self, req: &Request<'_>, addrs: &Addressing, _: &Wired) -> Result<(), BoxError> {
        if self.maps.is_empty() {
            return Ok(());
        }
        let ips: Vec<IpAddr> = addrs.ips.iter().map(|ip| ip.addr.addr()).collect();
        if ips.iter().any(IpAddr::is_ipv4) {
            sysctl::set(&route_localnet_key(&self.bridge), "1").map_err(boxed)?;
        }
        self.nft
            .ensure_portmap(&req.attachment(), &self.maps, &ips)
            .map_err(boxed)
    }

    fn del(&self, req: &Request<'_>) -> Result<(), BoxError> {
        self.nft.del_portmap(&req.attachment()).map_err(boxed)
    }
}

/// `com.docker.network.bridge.enable_icc=false`: the endpoint's bridge port is isolated, so
/// the bridge forwards nothing between two endpoints of the network while each still reaches
/// the bridge (its gateway, the host and beyond). Nothing to undo: the port goes with its veth.
pub struct NoIcc<'h> {
    pub h: &'h Handle,
}

impl Filter for NoIcc<'_> {
    fn name(&self) -> &'static str {
        "icc"
    }

    fn ensure(&self, _: &Request<'_>, _: &Addressing, wired: &Wired) -> Result<(), BoxError> {
        let host = wired.host.as_ref().ok_or_else(|| boxed(NoHostLink))?;
        let link = self.h.link_by_name(&host.name).map_err(boxed)?;
        self.h
            .set_bridge_port_isolated(link.index, true)
            .map_err(boxed)
    }

    fn del(&self, _: &Request<'_>) -> Result<(), BoxError> {
        Ok(())
    }
}

/// The driver reported no host-side link whose bridge port could be isolated (a bug).
#[derive(Debug, thiserror::Error)]
#[error("enable_icc=false: the bridge driver reported no host-side link to isolate")]
pub struct NoHostLink;

impl libnet::HasKind for NoHostLink {
    fn kind(&self) -> libnet::Kind {
        libnet::Kind::Internal
    }
}

/// libnet's form of a `-p` mapping; no host address means the network's `host_binding_ipv4`
/// when it has one, else every local address.
fn port_mapping(net: &Network, p: &PortMap) -> PortMapping {
    let binding = net
        .options
        .get(store::options::BRIDGE_HOST_BINDING_IPV4)
        .and_then(|v| v.parse::<IpAddr>().ok());
    PortMapping {
        host_port: p.host_port,
        container_port: p.container_port,
        protocol: match p.proto {
            store::Proto::Tcp => NftProto::Tcp,
            store::Proto::Udp => NftProto::Udp,
            store::Proto::Sctp => NftProto::Sctp,
        },
        host_ip: p.host_ip.or(binding),
    }
}

/// Run `f` with the lifecycle's pieces for `net`: the address source, the bridge driver and the
/// filters (isolation from other networks; ipMasq unless internal or turned off; the published
/// `ports`, always present so that detach removes whatever was recorded; isolated bridge ports
/// when `enable_icc` is false).
fn with_endpoint<T>(
    net: &Network,
    dirs: &Dirs,
    requested: Vec<IpAddr>,
    ports: &[PortMap],
    f: impl FnOnce(&mut HostLocal, &Bridge<'_>, &[&dyn Filter]) -> Result<T>,
) -> Result<T> {
    if net.driver != Driver::Bridge {
        bail!(
            "network {:?} has driver {:?}: knit run supports bridge networks only",
            net.name,
            net.driver.as_str()
        );
    }
    let mut source = HostLocal {
        cfg: ipam_config(net, &dirs.cni_data_dir)?,
        network: net.name.clone(),
        requested,
        default_route: !net.internal,
    };
    let h = Handle::new().context("opening a netlink socket")?;
    let driver = Bridge {
        h: &h,
        net: BridgeNet {
            bridge: bridge_name(net),
            mtu: net.mtu(),
            is_gateway: true,
            ..Default::default()
        },
    };
    let nft = dirs.nft();
    let masq = Masq { nft: &nft };
    let isolation = Isolation {
        nft: &nft,
        bridge: bridge_name(net),
    };
    let published = Ports {
        nft: &nft,
        bridge: bridge_name(net),
        maps: ports.iter().map(|p| port_mapping(net, p)).collect(),
    };
    let mut filters: Vec<&dyn Filter> = vec![&isolation];
    if masquerades(net) {
        filters.push(&masq);
    }
    filters.push(&published);
    let no_icc = NoIcc { h: &h };
    if !net.option_bool(store::options::BRIDGE_ENABLE_ICC, true) {
        filters.push(&no_icc);
    }
    f(&mut source, &driver, &filters)
}

/// What `run` needs once the sandbox is set up.
struct Made {
    sandbox: Sandbox,
    ns: NetNs,
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
    let net = if a.net == "none" {
        if a.ip.is_some() || !a.publish.is_empty() {
            bail!("--ip and -p need a network (--net none has only lo)");
        }
        None
    } else {
        Some(st.network(&a.net)?)
    };
    let made = create(st, dirs, net.as_ref(), a)?;
    let code = exec_in(Some(&made.ns), &a.cmd);
    if a.name.is_some() && code.is_ok() {
        return code;
    }
    let removed = remove(st, dirs, &made.sandbox);
    let code = code?;
    removed?;
    Ok(code)
}

/// `--name`, `--ip` and `-p` belong to a new sandbox; host and container: make none.
fn refuse_sandbox_flags(a: &RunArgs, why: &str) -> Result<()> {
    if a.name.is_some() || a.ip.is_some() || !a.publish.is_empty() {
        bail!("{why}: --name, --ip and -p need a new sandbox (--net NETWORK|none)");
    }
    Ok(())
}

/// The sandbox, its namespace and its endpoint; nothing is left when it fails.
fn create(st: &dyn Store, dirs: &Dirs, net: Option<&Network>, a: &RunArgs) -> Result<Made> {
    let id = store::new_id();
    let ns_name = netns_name(&id);
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("run-{}", &id[..12]));
    let mut sb = Sandbox::new(name, Path::new(NETNS_RUN_DIR).join(&ns_name));
    sb.id = id;
    st.create_sandbox(&sb)
        .with_context(|| format!("creating sandbox {:?}", sb.name))?;
    let ns = match NetNs::create_named(&ns_name) {
        Ok(ns) => ns,
        Err(e) => {
            if let Err(u) = st.delete_sandbox(&sb.id) {
                eprintln!(
                    "knit: rolling back: could not remove sandbox {:?}: {u}",
                    sb.name
                );
            }
            return Err(e).with_context(|| format!("creating namespace {ns_name}"));
        }
    };
    match setup(st, dirs, net, a, &sb, &ns) {
        Ok(()) => Ok(Made { sandbox: sb, ns }),
        Err(e) => {
            drop(ns);
            if let Err(u) = remove(st, dirs, &sb) {
                return Err(e.context(format!("rolling back, also: {u:#}")));
            }
            Err(e)
        }
    }
}

fn setup(
    st: &dyn Store,
    dirs: &Dirs,
    net: Option<&Network>,
    a: &RunArgs,
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
    let req = Request {
        network: &net.name,
        container_id: &sb.id,
        ifname: IFNAME,
        netns: Some(ns),
        mac: None,
    };
    with_endpoint(
        net,
        dirs,
        requested,
        &a.publish,
        |source, driver, filters| {
            let att = endpoint::attach(&req, source, driver, filters).with_context(|| {
                format!("attaching sandbox {:?} to network {:?}", sb.name, net.name)
            })?;
            let mut ep = Endpoint::new(net.id.clone());
            ep.sandbox_id = Some(sb.id.clone());
            ep.name = sb.name.clone();
            ep.ifname = IFNAME.into();
            ep.ports = a.publish.clone();
            ep.mac = att.wired.container.mac.clone();
            for ip in &att.addressing.ips {
                if ip.addr.addr().is_ipv4() {
                    ep.ipv4 = Some(ip.addr);
                } else {
                    ep.ipv6 = Some(ip.addr);
                }
            }
            if let Err(e) = st.put_endpoint(&ep) {
                if let Err(u) = endpoint::detach(&req, source, driver, filters) {
                    eprintln!("knit: rolling back: {u}");
                }
                return Err(e)
                    .with_context(|| format!("recording the endpoint of sandbox {:?}", sb.name));
            }
            Ok(())
        },
    )
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
        let detached = st
            .network(&ep.network_id)
            .map_err(anyhow::Error::from)
            .and_then(|net| {
                let ifname = if ep.ifname.is_empty() {
                    IFNAME
                } else {
                    &ep.ifname
                };
                let req = Request {
                    network: &net.name,
                    container_id: &sb.id,
                    ifname,
                    netns: ns.as_ref(),
                    mac: None,
                };
                with_endpoint(&net, dirs, Vec::new(), &[], |source, driver, filters| {
                    endpoint::detach(&req, source, driver, filters).map_err(anyhow::Error::from)
                })
            });
        match detached {
            Ok(()) => {
                if let Err(e) = st.delete_endpoint(&ep.id) {
                    errors.push(format!("endpoint {}: {e}", ep.id));
                }
            }
            Err(e) => errors.push(format!("detaching endpoint {}: {e:#}", ep.id)),
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
    let pid = child.id() as libc::pid_t;
    let done = AtomicBool::new(false);
    let status = std::thread::scope(|s| {
        s.spawn(|| forward_signals(&set, pid, &done));
        let st = child.wait();
        done.store(true, Ordering::Relaxed);
        st
    })
    .with_context(|| format!("waiting for {prog:?}"))?;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1))
}

/// Pass SIGTERM and SIGHUP (blocked, so waited for here) on to `pid` until `done`.
fn forward_signals(set: &libc::sigset_t, pid: libc::pid_t, done: &AtomicBool) {
    let tick = libc::timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    while !done.load(Ordering::Relaxed) {
        // SAFETY: set is a valid sigset_t; no siginfo wanted.
        let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &tick) };
        if (sig == libc::SIGTERM || sig == libc::SIGHUP) && !done.load(Ordering::Relaxed) {
            // SAFETY: kill(2) on the child we spawned and have not reaped yet.
            unsafe { libc::kill(pid, sig) };
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
        remove(st, dirs, &sb)?;
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
            &["SANDBOX ID", "NAME", "NETNS", "NETWORKS", "ADDRESSES"],
            rows,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::Pool;

    #[test]
    fn ipam_config_follows_the_pools() {
        let mut n = Network::new("n1", Driver::Bridge);
        let mut p = Pool::new("10.5.0.0/24".parse().unwrap());
        p.gateway = Some("10.5.0.1".parse().unwrap());
        p.ip_range = Some("10.5.0.0/25".parse().unwrap());
        n.ipam.push(p);
        let c = ipam_config(&n, Path::new("/tmp/x")).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.ranges.len(), 1);
        let r = &c.ranges[0].0[0];
        assert_eq!(r.range_start, "10.5.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(r.range_end, "10.5.0.127".parse::<IpAddr>().unwrap());
        assert_eq!(r.gateway, "10.5.0.1".parse::<IpAddr>().unwrap());
        let (s, e) = range_bounds(
            &"10.5.0.0/24".parse().unwrap(),
            &"10.5.0.128/25".parse().unwrap(),
        );
        assert_eq!(
            (s.to_string(), e.to_string()),
            ("10.5.0.128".into(), "10.5.0.254".into())
        );
    }

    #[test]
    fn ports_without_an_address_take_the_networks_host_binding() {
        let p = PortMap {
            proto: store::Proto::Udp,
            host_ip: None,
            host_port: 53,
            container_port: 5353,
        };
        let mut n = Network::new("n1", Driver::Bridge);
        let m = port_mapping(&n, &p);
        assert_eq!(
            (m.host_ip, m.host_port, m.container_port, m.protocol),
            (None, 53, 5353, NftProto::Udp)
        );
        n.options.insert(
            store::options::BRIDGE_HOST_BINDING_IPV4.into(),
            "127.0.0.1".into(),
        );
        assert_eq!(
            port_mapping(&n, &p).host_ip,
            Some("127.0.0.1".parse().unwrap())
        );
        let pinned = PortMap {
            host_ip: Some("10.0.0.1".parse().unwrap()),
            ..p
        };
        assert_eq!(
            port_mapping(&n, &pinned).host_ip,
            Some("10.0.0.1".parse().unwrap())
        );
    }

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
