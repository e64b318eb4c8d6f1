//! `knit`: the operator's CLI. For now: version, and named network namespaces for demos and
//! tests (`knit netns add|del|list`). The agent and controller daemons arrive with their issues.

use anyhow::{bail, Context, Result};
use libnet::netns::{NetNs, NETNS_RUN_DIR};

const USAGE: &str =
    "usage: knit version | knit netns add NAME | knit netns del NAME | knit netns list";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("knit: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: &[String]) -> Result<()> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["version"] | ["--version"] => {
            println!("knit {}", env!("CARGO_PKG_VERSION"));
            println!("CNI spec versions: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0");
        }
        ["netns", "add", name] => {
            NetNs::create_named(name).with_context(|| format!("creating netns {name}"))?;
        }
        ["netns", "del", name] => {
            NetNs::delete_named(name).with_context(|| format!("deleting netns {name}"))?;
        }
        ["netns", "list"] => {
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
        ["help"] | ["--help"] | ["-h"] => println!("{USAGE}"),
        _ => bail!("{USAGE}"),
    }
    Ok(())
}
