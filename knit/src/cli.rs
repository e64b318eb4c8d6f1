//! The command line: clap's derive structs and nothing else (every command's work is in its own
//! module), so parsing is tested without touching the kernel or a store.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use store::{PortMap, Proto};

/// knit: container networking over plain network namespaces, no daemon needed.
#[derive(Debug, Parser)]
#[command(name = "knit", version, about)]
pub struct Cli {
    /// Where the network model's database lives.
    #[arg(long, global = true, default_value = "/var/lib/knit")]
    pub state_dir: PathBuf,
    /// Where run-time state lives (knit's nftables element records).
    #[arg(long, global = true, default_value = "/run/knit")]
    pub run_dir: PathBuf,
    /// The host-local IPAM data dir shared with knit's CNI `host-local` plugin.
    #[arg(long, global = true, default_value = libnet::ipam::config::DEFAULT_DATA_DIR)]
    pub cni_data_dir: PathBuf,
    /// Output format of the listing commands.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Keep the network model in this etcd cluster (`http://HOST:PORT`, comma-separated or
    /// repeated) instead of the SQLite database under --state-dir: `network` commands then
    /// work cluster-wide (overlay networks), and `agent` runs as a host of the cluster.
    #[arg(long, global = true, value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// With --etcd: the key prefix everything of this cluster lives under.
    #[arg(long, global = true, default_value = "/knit")]
    pub etcd_prefix: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print knit's version and the CNI spec versions it speaks.
    Version,
    /// Manage networks (Docker's model: bridge and macvlan networks with their pools).
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Run a command in a new sandbox (a named network namespace) attached to a network.
    Run(RunArgs),
    /// Manage sandboxes made by `knit run --name`.
    #[command(subcommand)]
    Sandbox(SandboxCmd),
    /// Register endpoints that knit did not attach (an orchestrator's, a VM's): names for DNS.
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    /// Services: a stable virtual IP and DNS name balancing over the endpoints a selector
    /// picks (by their labels: `knit run --label app=web`).
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Run the host's agent: Docker's remote network + IPAM plugin (`docker network create -d
    /// knit --ipam-driver knit`), knit's local API socket, metrics, and the repair pass.
    Agent(AgentArgs),
    /// Serve knit's service-discovery DNS (endpoint names, per network) from the store.
    Dns(DnsArgs),
    /// Run one replica of the SDN controller: leader election on etcd, each host's overlay
    /// state computed incrementally and streamed to the agents.
    Controller(crate::controller_cmd::ControllerArgs),
    /// The cluster as etcd holds it (needs --etcd): hosts, VTEPs, overlay networks, blocks
    /// and endpoints, as text or Graphviz.
    Topology(crate::topology::TopologyArgs),
    /// Raw named network namespaces (for demos and tests).
    #[command(subcommand)]
    Netns(NetnsCmd),
}

#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create a network.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls,
    /// Print networks as JSON shaped like `docker network inspect`.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks that have no endpoints (and the bridge knit made for them).
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Attach a sandbox (`knit run --name`) to one more network: its next free interface
    /// (eth1, eth2, ...).
    Connect {
        /// Ask for this address (reserved in the network's IPAM like any other).
        #[arg(long)]
        ip: Option<IpAddr>,
        network: String,
        sandbox: String,
    },
    /// Detach a sandbox from a network: its interface, address and firewall elements go.
    Disconnect { network: String, sandbox: String },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The network driver: `bridge`, or `macvlan` (with `-o parent=LINK`, and `-o
    /// macvlan_mode=bridge|private|vepa|passthru`, default bridge); with --etcd, `overlay`
    /// (VXLAN between the hosts, or `-o mode=routed` for plain routes on a shared L2).
    #[arg(short, long, default_value = "bridge")]
    pub driver: String,
    /// The IPv4 (or, with --ipv6, IPv6) subnet; default: a free private /24 (172.17.0.0/24 up).
    #[arg(long)]
    pub subnet: Vec<IpNet>,
    /// The gateway of the subnet given at the same position; default: its first address.
    #[arg(long)]
    pub gateway: Vec<IpAddr>,
    /// Hand out addresses only from this part of the subnet at the same position.
    #[arg(long)]
    pub ip_range: Vec<IpNet>,
    /// Enable IPv6 (needed for an IPv6 --subnet).
    #[arg(long)]
    pub ipv6: bool,
    /// No route out of the network and no masquerade.
    #[arg(long)]
    pub internal: bool,
    /// Driver options under Docker's names (com.docker.network.bridge.name=br0, ...).
    #[arg(short = 'o', long = "opt", value_parser = parse_key_value)]
    pub opt: Vec<(String, String)>,
    /// Labels (KEY=VALUE).
    #[arg(long, value_parser = parse_key_value)]
    pub label: Vec<(String, String)>,
    pub name: String,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The network to attach to, `none` (loopback only), `host` (knit's own namespace, no
    /// sandbox) or `container:NAME` (the namespace of sandbox NAME, no new sandbox).
    #[arg(long = "net", alias = "network")]
    pub net: String,
    /// Keep the sandbox under this name after CMD exits (until `knit sandbox rm NAME`).
    #[arg(long)]
    pub name: Option<String>,
    /// Ask for this address (reserved in the network's IPAM like any other).
    #[arg(long)]
    pub ip: Option<IpAddr>,
    /// Publish a port of a bridge network's sandbox on the host:
    /// `[[HOST_IP:]HOST_PORT:]CONTAINER_PORT[/tcp|udp]` (repeatable; DNAT in knit's nftables
    /// table, reachable from outside, from the host and on 127.0.0.1). Without HOST_PORT knit
    /// picks a free one of the host's ephemeral range (`knit sandbox ls` shows it).
    #[arg(short = 'p', long = "publish", value_parser = parse_port_map)]
    pub publish: Vec<PortMap>,
    /// Another DNS name of the sandbox on its networks (repeatable).
    #[arg(long)]
    pub alias: Vec<String>,
    /// A label of the sandbox and its endpoints, KEY=VALUE (repeatable; services select by
    /// labels).
    #[arg(long, value_parser = parse_key_value)]
    pub label: Vec<(String, String)>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub cmd: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum EndpointCmd {
    /// Register NAME at IP on a network (its address is reserved in the network's IPAM).
    Add {
        #[arg(long = "network", alias = "net")]
        network: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        ip: IpAddr,
        /// Another name for the same address (repeatable).
        #[arg(long)]
        alias: Vec<String>,
        /// KEY=VALUE (repeatable).
        #[arg(long, value_parser = parse_key_value)]
        label: Vec<(String, String)>,
    },
    /// Remove a registered endpoint (only one made by `endpoint add`).
    #[command(alias = "remove")]
    Rm {
        #[arg(long = "network", alias = "net")]
        network: String,
        name: String,
    },
    /// List the endpoints of every network, or of one.
    #[command(alias = "list")]
    Ls {
        #[arg(long = "network", alias = "net")]
        network: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServiceCmd {
    /// Create service NAME on a network: a virtual IP (from the top of the subnet, outside
    /// its ip-range, or --vip), a DNS name, and balancing over the selected endpoints.
    Create {
        name: String,
        #[arg(long = "network", alias = "net")]
        network: String,
        /// KEY=VALUE[,KEY=VALUE...]: the labels a backend must carry (repeatable).
        #[arg(long, value_parser = parse_key_value_list)]
        selector: Vec<Vec<(String, String)>>,
        /// [NAME=]PORT[:TARGET][/PROTO] (repeatable): `80/tcp`, `http=8080:80`, `53/udp`. The
        /// name (default: the port's IANA service name) makes the SRV record
        /// `_NAME._PROTO.SERVICE.NETWORK.DOMAIN`.
        #[arg(long, required = true, value_parser = store::ServicePort::parse)]
        port: Vec<store::ServicePort>,
        /// The virtual IP: any free address of the network's subnets.
        #[arg(long)]
        vip: Option<IpAddr>,
        /// KEY=VALUE (repeatable).
        #[arg(long, value_parser = parse_key_value)]
        label: Vec<(String, String)>,
    },
    /// List services (of every network, or of one), with their number of backends.
    #[command(alias = "list")]
    Ls {
        #[arg(long = "network", alias = "net")]
        network: Option<String>,
    },
    /// Show services as JSON, with their current backends.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove services: their rules, their virtual IP and their record.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The Docker plugin's name: its socket is PLUGIN_DIR/NAME.sock and Docker knows it as
    /// `-d NAME` / `--ipam-driver NAME`.
    #[arg(long, default_value = "knit")]
    pub plugin_name: String,
    /// Where Docker looks for plugin sockets (default /run/docker/plugins; with --etcd the
    /// Docker plugin is served only when this is given).
    #[arg(long)]
    pub plugin_dir: Option<PathBuf>,
    /// Log lines as text or JSON (stderr; filter with KNIT_LOG, e.g. KNIT_LOG=debug).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Serve Prometheus metrics on this address (path /metrics).
    #[arg(long)]
    pub metrics: Option<std::net::SocketAddr>,
    /// The Docker Engine API socket, asked for the names of networks Docker creates (Docker
    /// tells a plugin only their ids).
    #[arg(long, env = "DOCKER_HOST", default_value = "unix:///run/docker.sock")]
    pub docker_host: String,
    /// Serve knit's DNS (names of endpoints, per network) on port 53 of every network's
    /// gateway address; containers point at it (`docker run --dns GATEWAY`).
    #[arg(long)]
    pub dns: bool,
    /// With --dns: forward names that are not knit's here (default: /etc/resolv.conf's).
    #[arg(long, value_parser = crate::dns_cmd::parse_listen)]
    pub dns_upstream: Vec<std::net::SocketAddr>,
    /// With --dns: answer knit's names only.
    #[arg(long, conflicts_with = "dns_upstream")]
    pub dns_no_forward: bool,
    /// Seconds between repair passes (store → kernel; with --etcd, the controller's state →
    /// kernel).
    #[arg(long, default_value_t = 30)]
    pub reconcile_interval: u64,
    /// With --etcd: this host's name in the cluster (unique among live hosts).
    #[arg(long, requires = "underlay_ip")]
    pub host: Option<String>,
    /// With --etcd: the address other hosts reach this one at (the VTEP's local address).
    #[arg(long, requires = "host")]
    pub underlay_ip: Option<IpAddr>,
    /// With --etcd: seconds of the host's lease in etcd (its registration and IPAM blocks
    /// expire that long after the agent stops renewing them).
    #[arg(long, default_value_t = 10)]
    pub lease_ttl: u64,
}

#[derive(Debug, Args)]
pub struct DnsArgs {
    /// Listen on ADDR[:PORT] (port 53 by default), UDP and TCP; repeatable.
    #[arg(long, required = true, value_parser = crate::dns_cmd::parse_listen)]
    pub listen: Vec<std::net::SocketAddr>,
    /// Fully qualified names are NAME.NETWORK.DOMAIN.
    #[arg(long, default_value = dns::DEFAULT_DOMAIN)]
    pub domain: String,
    /// TTL of knit's answers, in seconds.
    #[arg(long, default_value_t = dns::DEFAULT_TTL)]
    pub ttl: u32,
    /// Forward names that are not knit's to this resolver (IP or IP:PORT; repeatable).
    /// Default: the nameservers of /etc/resolv.conf.
    #[arg(long, value_parser = crate::dns_cmd::parse_listen, conflicts_with = "no_forward")]
    pub upstream: Vec<std::net::SocketAddr>,
    /// Answer knit's names only; refuse the rest.
    #[arg(long)]
    pub no_forward: bool,
    /// Log lines as text or JSON (stderr; filter with KNIT_LOG).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum SandboxCmd {
    /// List sandboxes.
    #[command(alias = "list")]
    Ls,
    /// Remove sandboxes: detach their endpoints, delete their namespaces and records.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Repair what a knit killed mid-way left: half-made or half-removed sandboxes, sandboxes
    /// whose namespace is gone, endpoints whose link is gone, namespaces without a record,
    /// bridges of networks half made or half removed. Every command that changes state runs
    /// the quick part of this first.
    Prune,
}

#[derive(Debug, Subcommand)]
pub enum NetnsCmd {
    /// `ip netns add NAME`
    Add { name: String },
    /// `ip netns del NAME`
    Del { name: String },
    /// `ip netns list`
    List,
}

/// `KEY=VALUE`, the key not empty (the value may be).
/// `KEY=VALUE[,KEY=VALUE...]` (a selector, as `kubectl -l`).
pub fn parse_key_value_list(s: &str) -> Result<Vec<(String, String)>, String> {
    s.split(',').map(parse_key_value).collect()
}

pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// `[[HOST_IP:]HOST_PORT:]CONTAINER_PORT[/tcp|udp]`, ports 1-65535 (an IPv6 HOST_IP in
/// brackets). No HOST_PORT (`80`, `:80`, `127.0.0.1::80`, as Docker) is host port 0: knit picks
/// a free one ([`crate::ports`]).
pub fn parse_port_map(s: &str) -> Result<PortMap, String> {
    let bad =
        |why: &str| format!("{why} in {s:?} (want [[HOST_IP:]HOST_PORT:]CONTAINER_PORT[/tcp|udp])");
    let (spec, proto) = match s.rsplit_once('/') {
        Some((spec, "tcp")) => (spec, Proto::Tcp),
        Some((spec, "udp")) => (spec, Proto::Udp),
        Some(_) => return Err(bad("unknown protocol")),
        None => (s, Proto::Tcp),
    };
    let (rest, container) = spec.rsplit_once(':').unwrap_or(("", spec));
    let (ip, host) = match rest.rsplit_once(':') {
        Some((ip, host)) => {
            let ip = ip
                .strip_prefix('[')
                .and_then(|i| i.strip_suffix(']'))
                .unwrap_or(ip);
            let ip: IpAddr = ip.parse().map_err(|_| bad("bad host address"))?;
            (Some(ip), host)
        }
        None => (None, rest),
    };
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0);
    let host_port = match host {
        "" => 0,
        h => port(h).ok_or_else(|| bad("bad host port"))?,
    };
    Ok(PortMap {
        proto,
        host_ip: ip,
        host_port,
        container_port: port(container).ok_or_else(|| bad("bad container port"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("knit").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_help() {
        for args in [
            &["--help"][..],
            &["network", "--help"],
            &["network", "create", "--help"],
            &["network", "ls", "--help"],
            &["network", "inspect", "--help"],
            &["network", "rm", "--help"],
            &["network", "connect", "--help"],
            &["network", "disconnect", "--help"],
            &["run", "--help"],
            &["sandbox", "ls", "--help"],
            &["sandbox", "rm", "--help"],
            &["sandbox", "prune", "--help"],
            &["netns", "add", "--help"],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{args:?}");
        }
    }

    #[test]
    fn global_flags_have_their_defaults_and_go_anywhere() {
        let c = parse(&["network", "ls"]).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/knit"));
        assert_eq!(c.run_dir, PathBuf::from("/run/knit"));
        assert_eq!(c.cni_data_dir, PathBuf::from("/var/lib/cni/networks"));
        assert_eq!(c.format, Format::Table);
        let c = parse(&["network", "ls", "--format", "json", "--state-dir", "/tmp/s"]).unwrap();
        assert_eq!(c.format, Format::Json);
        assert_eq!(c.state_dir, PathBuf::from("/tmp/s"));
        assert!(parse(&["--format", "yaml", "network", "ls"]).is_err());
    }

    #[test]
    fn network_create_takes_docker_flags() {
        let c = parse(&[
            "network",
            "create",
            "--subnet",
            "10.9.0.0/24",
            "--gateway",
            "10.9.0.254",
            "--ip-range",
            "10.9.0.128/25",
            "--internal",
            "-o",
            "com.docker.network.bridge.name=br9",
            "-o",
            "x=",
            "n9",
        ])
        .unwrap();
        let Command::Network(NetworkCmd::Create(a)) = c.command else {
            panic!("not create: {c:?}")
        };
        assert_eq!(a.driver, "bridge");
        assert_eq!(a.subnet, vec!["10.9.0.0/24".parse::<IpNet>().unwrap()]);
        assert_eq!(a.gateway, vec!["10.9.0.254".parse::<IpAddr>().unwrap()]);
        assert_eq!(a.ip_range.len(), 1);
        assert!(a.internal && !a.ipv6);
        assert_eq!(
            a.opt,
            vec![
                ("com.docker.network.bridge.name".into(), "br9".into()),
                ("x".into(), String::new())
            ]
        );
        assert_eq!(a.name, "n9");
        assert!(parse(&["network", "create", "-o", "novalue", "n"]).is_err());
        assert!(parse(&["network", "create", "--subnet", "10.9.0.0/33", "n"]).is_err());
        assert!(parse(&["network", "create"]).is_err());
    }

    #[test]
    fn run_takes_the_command_after_the_double_dash() {
        let c = parse(&[
            "run", "--net", "n1", "--name", "s1", "--", "ping", "-c1", "x",
        ])
        .unwrap();
        let Command::Run(r) = c.command else {
            panic!("not run")
        };
        assert_eq!(r.net, "n1");
        assert_eq!(r.name.as_deref(), Some("s1"));
        assert_eq!(r.cmd, ["ping", "-c1", "x"]);
        assert!(
            parse(&["run", "--net", "n1"]).is_err(),
            "a command is required"
        );
        assert!(parse(&["run", "--", "true"]).is_err(), "--net is required");
        assert!(parse(&["run", "--net", "n", "--ip", "nope", "--", "true"]).is_err());
    }

    #[test]
    fn run_publishes_ports_as_docker() {
        let c = parse(&[
            "run",
            "--net",
            "n",
            "-p",
            "8080:80",
            "-p",
            "127.0.0.1:53:5353/udp",
            "--",
            "true",
        ])
        .unwrap();
        let Command::Run(r) = c.command else {
            panic!("not run")
        };
        assert_eq!(
            r.publish,
            [
                PortMap {
                    proto: Proto::Tcp,
                    host_ip: None,
                    host_port: 8080,
                    container_port: 80
                },
                PortMap {
                    proto: Proto::Udp,
                    host_ip: Some("127.0.0.1".parse().unwrap()),
                    host_port: 53,
                    container_port: 5353
                }
            ]
        );
        let v6 = parse_port_map("[::1]:8080:80/tcp").unwrap();
        assert_eq!(v6.host_ip, Some("::1".parse().unwrap()));
        for bad in [
            "0:80",
            "8080:0",
            "8080:80/icmp",
            "x:8080:80",
            "70000:80",
            "0",
            "",
            "80:",
            "x::80",
        ] {
            assert!(parse_port_map(bad).is_err(), "{bad}");
        }
        // No host port: knit picks one (Docker's `-p 80`).
        for (auto, ip, proto) in [
            ("80", None, Proto::Tcp),
            (":80", None, Proto::Tcp),
            ("80/udp", None, Proto::Udp),
            ("127.0.0.1::80", Some("127.0.0.1"), Proto::Tcp),
        ] {
            let p = parse_port_map(auto).unwrap();
            assert_eq!(
                (p.host_port, p.container_port, p.proto),
                (0, 80, proto),
                "{auto}"
            );
            assert_eq!(p.host_ip, ip.map(|i| i.parse().unwrap()), "{auto}");
        }
    }

    #[test]
    fn etcd_is_global_and_the_agent_needs_a_host_and_its_underlay_ip() {
        let c = parse(&[
            "network",
            "create",
            "--etcd",
            "http://10.0.0.1:2379,http://10.0.0.2:2379",
            "--driver",
            "overlay",
            "--subnet",
            "10.244.0.0/16",
            "-o",
            "mode=routed",
            "ov",
        ])
        .unwrap();
        assert_eq!(c.etcd, ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
        assert_eq!(c.etcd_prefix, "/knit");
        let Command::Network(NetworkCmd::Create(a)) = c.command else {
            panic!("not network create")
        };
        assert_eq!(a.driver, "overlay");
        assert_eq!(a.opt, [("mode".to_string(), "routed".to_string())]);
        assert!(parse(&["agent", "--host", "h1"]).is_err());
        assert!(parse(&["agent", "--underlay-ip", "10.0.0.1"]).is_err());
        let c = parse(&[
            "--etcd",
            "http://10.0.0.1:2379",
            "agent",
            "--host",
            "h1",
            "--underlay-ip",
            "10.0.0.1",
        ])
        .unwrap();
        let Command::Agent(a) = c.command else {
            panic!("not agent")
        };
        assert_eq!(a.host.as_deref(), Some("h1"));
        assert_eq!(a.plugin_dir, None);
    }

    #[test]
    fn inspect_and_rm_need_a_name() {
        assert!(parse(&["network", "inspect"]).is_err());
        assert!(parse(&["network", "rm"]).is_err());
        assert!(parse(&["sandbox", "rm"]).is_err());
        let c = parse(&["network", "rm", "a", "b"]).unwrap();
        assert!(
            matches!(c.command, Command::Network(NetworkCmd::Rm { names }) if names == ["a", "b"])
        );
    }
}
