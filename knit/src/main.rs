//! `knit`: the operator's CLI. It needs no daemon (podman's model): it opens the store under
//! `--state-dir` itself. Commands: `network create|ls|inspect|rm|connect|disconnect`, `run`,
//! `sandbox ls|rm|prune`, `netns add|del|list`, `version`; `knit --help` and `--help` on each.
//!
//! Exit status: 0 on success, 1 when knit failed; `knit run` exits with CMD's status (128 +
//! the signal if one ended it), 125 when knit itself failed, 126/127 when CMD could not be
//! started (as `docker run`).

mod agent;
mod attach;
mod cli;
mod cluster;
mod connect;
mod controller_cmd;
mod dns_cmd;
mod endpoint_cmd;
mod lease;
mod network;
mod ports;
mod repair;
mod sandbox;
mod service;
mod table;
mod topology;

use anyhow::{Context, Result};
use clap::Parser;
use libnet::netns::{NetNs, NETNS_RUN_DIR};
use store::SqliteStore;

use cli::{Cli, Command, EndpointCmd, NetnsCmd, NetworkCmd, SandboxCmd, ServiceCmd};
use sandbox::{Dirs, RunError};

fn main() {
    let cli = Cli::parse();
    let is_run = matches!(cli.command, Command::Run(_));
    match dispatch(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("knit: {e:#}");
            let code = match e.downcast_ref::<RunError>() {
                Some(r) => r.exit_code(),
                None if is_run => 125,
                None => 1,
            };
            std::process::exit(code);
        }
    }
}

fn open_store(cli: &Cli) -> Result<SqliteStore> {
    SqliteStore::open(&cli.state_dir)
        .with_context(|| format!("opening the store in {}", cli.state_dir.display()))
}

fn dispatch(cli: Cli) -> Result<i32> {
    let dirs = Dirs {
        run_dir: cli.run_dir.clone(),
        cni_data_dir: cli.cni_data_dir.clone(),
    };
    if !cli.etcd.is_empty() {
        return on_etcd(&cli, dirs);
    }
    match &cli.command {
        Command::Version => {
            println!("knit {}", env!("CARGO_PKG_VERSION"));
            println!("CNI spec versions: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0");
        }
        Command::Network(cmd) => {
            let st = open_store(&cli)?;
            if !matches!(cmd, NetworkCmd::Ls | NetworkCmd::Inspect { .. }) {
                repair::before_change(&st, &dirs);
            }
            match cmd {
                NetworkCmd::Create(a) => println!("{}", network::create(&st, a)?.id),
                NetworkCmd::Ls => print!("{}", network::ls(&st, cli.format)?),
                NetworkCmd::Inspect { names } => print!("{}", network::inspect(&st, names)?),
                NetworkCmd::Rm { names } => rm_each(names, |n| network::rm(&st, n, &dirs))?,
                NetworkCmd::Connect {
                    network,
                    sandbox,
                    ip,
                } => {
                    connect::connect(&st, &dirs, network, sandbox, *ip)?;
                }
                NetworkCmd::Disconnect { network, sandbox } => {
                    connect::disconnect(&st, &dirs, network, sandbox)?;
                }
            }
        }
        Command::Run(a) => {
            let st = open_store(&cli)?;
            return sandbox::run(&st, &dirs, a);
        }
        Command::Sandbox(cmd) => {
            let st = open_store(&cli)?;
            match cmd {
                SandboxCmd::Ls => print!("{}", sandbox::ls(&st, cli.format)?),
                SandboxCmd::Rm { names } => {
                    repair::before_change(&st, &dirs);
                    rm_each(names, |n| sandbox::rm(&st, &dirs, n))?;
                }
                SandboxCmd::Prune => {
                    let r = repair::repair(&st, &dirs, true);
                    for f in &r.fixed {
                        println!("{f}");
                    }
                    if !r.errors.is_empty() {
                        anyhow::bail!("could not repair: {}", r.errors.join("; "));
                    }
                }
            }
        }
        Command::Service(cmd) => {
            let st = open_store(&cli)?;
            match cmd {
                ServiceCmd::Create {
                    name,
                    network,
                    selector,
                    port,
                    vip,
                    label,
                } => {
                    repair::before_change(&st, &dirs);
                    let selector: Vec<(String, String)> = selector.concat();
                    let a = service::CreateArgs {
                        name,
                        network,
                        selector: &selector,
                        ports: port,
                        vip: *vip,
                        labels: label,
                    };
                    let svc = service::create(&st, &dirs, &a)?;
                    println!("{}", svc.vip);
                }
                ServiceCmd::Ls { network } => {
                    print!("{}", service::ls(&st, network.as_deref(), cli.format)?)
                }
                ServiceCmd::Inspect { names } => print!("{}", service::inspect(&st, names)?),
                ServiceCmd::Rm { names } => rm_each(names, |n| service::rm(&st, &dirs, n))?,
            }
        }
        Command::Netns(cmd) => netns(cmd)?,
        Command::Agent(a) => return agent::run(&cli.state_dir, dirs, a),
        Command::Dns(a) => return dns_cmd::run(std::sync::Arc::new(open_store(&cli)?), a),
        Command::Controller(_) | Command::Topology(_) => {
            anyhow::bail!("this command needs --etcd URL (the cluster's etcd)")
        }
        Command::Endpoint(cmd) => {
            let st = open_store(&cli)?;
            match cmd {
                EndpointCmd::Add {
                    network,
                    name,
                    ip,
                    alias,
                    label,
                } => {
                    let a = endpoint_cmd::AddArgs {
                        network,
                        name,
                        ip: *ip,
                        aliases: alias,
                        labels: label,
                    };
                    println!("{}", endpoint_cmd::add(&st, &dirs, &a)?.id);
                }
                EndpointCmd::Rm { network, name } => {
                    endpoint_cmd::rm(&st, &dirs, network, name)?;
                    println!("{name}");
                }
                EndpointCmd::Ls { network } => {
                    print!("{}", endpoint_cmd::ls(&st, network.as_deref())?)
                }
            }
        }
    }
    Ok(0)
}

/// The commands that work cluster-wide, with `--etcd`.
fn on_etcd(cli: &Cli, dirs: Dirs) -> Result<i32> {
    match &cli.command {
        Command::Network(cmd) => {
            let st = cluster::open(&cli.etcd, &cli.etcd_prefix)?;
            cluster::network(&st, cmd, cli.format)?;
            Ok(0)
        }
        Command::Agent(a) => {
            agent::cluster::run(&cli.etcd, &cli.etcd_prefix, &cli.state_dir, dirs, a)
        }
        Command::Controller(a) => {
            controller_cmd::run(&cli.state_dir, &cli.run_dir, &cli.etcd, &cli.etcd_prefix, a)
        }
        Command::Topology(a) => {
            let st = cluster::open(&cli.etcd, &cli.etcd_prefix)?;
            topology::show(&st, a)?;
            Ok(0)
        }
        Command::Dns(a) => {
            let st = cluster::open(&cli.etcd, &cli.etcd_prefix)?;
            dns_cmd::run(std::sync::Arc::new(st), a)
        }
        _ => anyhow::bail!(
            "--etcd is for `network`, `agent`, `controller`, `dns` and `topology` (the other \
             commands act on this host)"
        ),
    }
}

fn netns(cmd: &NetnsCmd) -> Result<()> {
    match cmd {
        NetnsCmd::Add { name } => {
            NetNs::create_named(name).with_context(|| format!("creating netns {name}"))?;
        }
        NetnsCmd::Del { name } => {
            NetNs::delete_named(name).with_context(|| format!("deleting netns {name}"))?;
        }
        NetnsCmd::List => {
            let mut names: Vec<String> = match std::fs::read_dir(NETNS_RUN_DIR) {
                Ok(rd) => rd
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e).context(NETNS_RUN_DIR),
            };
            names.sort();
            for n in names {
                println!("{n}");
            }
        }
    }
    Ok(())
}

/// `rm A B C` as Docker does it: each name on its own, the removed ones printed, every failure
/// reported on stderr, and a failed exit if any failed (`rm` of one name: its error).
pub fn rm_each(names: &[String], rm: impl Fn(&[String]) -> Result<Vec<String>>) -> Result<()> {
    if let [one] = names {
        for n in rm(std::slice::from_ref(one))? {
            println!("{n}");
        }
        return Ok(());
    }
    let mut failed = Vec::new();
    for name in names {
        match rm(std::slice::from_ref(name)) {
            Ok(done) => done.iter().for_each(|n| println!("{n}")),
            Err(e) => {
                eprintln!("knit: {name}: {e:#}");
                failed.push(name.as_str());
            }
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    anyhow::bail!("could not remove {}", failed.join(", "))
}
