//! `knit-cni`: every knit CNI plugin in one binary, chosen by the name it was run as
//! (`target/cni/bin/bridge` is a link to it), or by the first argument (`knit-cni bridge`).

use std::path::Path;

use cni_plugins::{plugins, skel};

fn main() {
    // args_os: `args` panics (an abort here) on an argument that is not UTF-8.
    let mut argv = std::env::args_os();
    let arg0 = argv.next().unwrap_or_default();
    let mut name = Path::new(&arg0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name == "knit-cni" {
        name = argv
            .next()
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name == "--list" {
            // `make build` links the binary under each of these names.
            println!("{}", plugins::NAMES.join("\n"));
            return;
        }
    }
    let Some(plugin) = plugins::by_name(&name) else {
        eprintln!(
            "knit-cni: unknown plugin {name:?}; known: {}",
            plugins::NAMES.join(", ")
        );
        std::process::exit(1);
    };
    let code = skel::run(
        plugin,
        &skel::ProcessEnv,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
    );
    std::process::exit(code);
}
