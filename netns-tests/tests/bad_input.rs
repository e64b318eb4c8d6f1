//! knit's plugins against bad input and load: spec error JSON with the right code and nothing
//! left behind; 64 concurrent ADDs get 64 distinct addresses; DEL after the netns is gone
//! succeeds. Targets `KNIT_CNI_BIN` (default target/cni/bin); the reference fails parts of it.
#![cfg(feature = "root-tests")]

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use netns_tests::cni::{build_one, plugins_of, PluginEnv, Runner, Runtime};
use netns_tests::scenario::{result_addrs, TempDir};
use netns_tests::topology::TestNs;
use serde_json::{json, Value};

/// CNI spec error codes (containernetworking/cni SPEC.md, "Error").
const INCOMPATIBLE_VERSION: u64 = 1;
const INVALID_ENV: u64 = 4;
const DECODE: u64 = 6;
const INVALID_CONFIG: u64 = 7;

fn conflist(name: &str, data_dir: &Path) -> Value {
    json!({"cniVersion": "1.0.0", "name": name, "plugins": [{
        "type": "bridge", "bridge": "kntbr0", "isGateway": true,
        "ipam": {"type": "host-local", "dataDir": data_dir.display().to_string(),
                 "ranges": [[{"subnet": "10.244.20.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}}]})
}

struct Env {
    host: TestNs,
    c: TestNs,
    tmp: TempDir,
}

impl Env {
    fn new() -> Result<Env> {
        netns_tests::require_root();
        Ok(Env {
            host: TestNs::new("h")?,
            c: TestNs::new("c")?,
            tmp: TempDir::new("bad")?,
        })
    }

    fn runner(&self) -> Runner<'_> {
        Runner::new(netns_tests::knit_dir(), self.host.ns())
    }

    fn data_dir(&self) -> std::path::PathBuf {
        self.tmp.path().join("nets")
    }

    /// Nothing but `lo` in either namespace and no file anywhere under the temp dir.
    fn assert_clean(&self) -> Result<()> {
        for ns in [&self.host, &self.c] {
            let links: Vec<String> = ns.handle()?.links()?.into_iter().map(|l| l.name).collect();
            ensure!(links == ["lo"], "links left in {}: {links:?}", ns.name());
        }
        let files = walk(self.tmp.path());
        ensure!(files.is_empty(), "files left: {files:?}");
        Ok(())
    }
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

/// One bad call: how to break the env or stdin, and the code it must answer.
struct Row {
    what: &'static str,
    code: u64,
    edit: fn(&mut PluginEnv, &mut Vec<u8>, &Env),
}

fn rows() -> Vec<Row> {
    vec![
        Row {
            what: "network name \"../x\"",
            code: INVALID_CONFIG,
            edit: |_, stdin, env| {
                let list = conflist("../x", &env.data_dir());
                let rt = Runtime::new("knt-bad", None, "eth0");
                *stdin = serde_json::to_vec(&build_one(&list, &plugins_of(&list)[0], None, &rt))
                    .expect("json");
            },
        },
        Row {
            what: "ifname longer than 15 bytes",
            code: INVALID_ENV,
            edit: |e, _, _| e.ifname = Some("eth0123456789abc".into()),
        },
        Row {
            what: "unknown cniVersion",
            code: INCOMPATIBLE_VERSION,
            edit: |_, stdin, _| {
                let mut v: Value = serde_json::from_slice(stdin).expect("json");
                v["cniVersion"] = json!("9.9.9");
                *stdin = serde_json::to_vec(&v).expect("json");
            },
        },
        Row {
            what: "missing CNI_COMMAND",
            code: INVALID_ENV,
            edit: |e, _, _| e.command = None,
        },
        Row {
            what: "missing CNI_CONTAINERID",
            code: INVALID_ENV,
            edit: |e, _, _| e.container_id = None,
        },
        Row {
            what: "malformed JSON",
            code: DECODE,
            edit: |_, stdin, _| stdin.truncate(stdin.len() / 2),
        },
    ]
}

fn run_row(row: &Row) -> Result<()> {
    let env = Env::new()?;
    let list = conflist("knt-bad", &env.data_dir());
    let rt = Runtime::new("knt-bad", Some(&env.c.path()), "eth0");
    let runner = env.runner();
    let mut penv = runner.env("ADD", &rt);
    let mut stdin = serde_json::to_vec(&build_one(&list, &plugins_of(&list)[0], None, &rt))?;
    (row.edit)(&mut penv, &mut stdin, &env);
    let call = runner.call_raw("bridge", &penv, &stdin);
    let err = match call.outcome {
        Ok(v) => bail!("succeeded: {v}"),
        Err(e) => e,
    };
    let parsed: Value = serde_json::from_str(err.stdout.trim())
        .with_context(|| format!("no error JSON on stdout: {:?}", err.stdout))?;
    ensure!(
        parsed
            .get("msg")
            .and_then(Value::as_str)
            .is_some_and(|m| !m.is_empty()),
        "error JSON without msg: {parsed}"
    );
    ensure!(
        err.code == row.code,
        "code {} (want {}): {parsed}",
        err.code,
        row.code
    );
    env.assert_clean()
}

#[test]
fn bad_input_answers_spec_errors_and_leaves_nothing() {
    let mut failed = Vec::new();
    for row in rows() {
        match run_row(&row) {
            Ok(()) => println!("PASS {} -> code {}", row.what, row.code),
            Err(e) => {
                println!("FAIL {}: {e:#}", row.what);
                failed.push(row.what);
            }
        }
    }
    assert!(failed.is_empty(), "failed: {failed:?}");
}

#[test]
fn concurrent_adds_get_distinct_addresses() -> Result<()> {
    const N: usize = 64;
    let env = Env::new()?;
    let list = conflist("knt-many", &env.data_dir());
    let nss = (0..N)
        .map(|_| TestNs::new("m"))
        .collect::<Result<Vec<_>>>()?;
    let rts: Vec<Runtime> = nss
        .iter()
        .enumerate()
        .map(|(i, ns)| Runtime::new(&format!("knt-many-{i}"), Some(&ns.path()), "eth0"))
        .collect();
    let runner = env.runner();
    let results: Vec<Result<Value>> = std::thread::scope(|s| {
        let hs: Vec<_> = rts
            .iter()
            .map(|rt| s.spawn(|| runner.add(&list, rt).ok().cloned()))
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let mut addrs = Vec::new();
    for (i, r) in results.iter().enumerate() {
        let r = r.as_ref().map_err(|e| anyhow::anyhow!("ADD {i}: {e:#}"))?;
        addrs.extend(result_addrs(r));
    }
    let mut distinct = addrs.clone();
    distinct.sort();
    distinct.dedup();
    println!(
        "{N} concurrent ADDs: {} addresses, {} distinct",
        addrs.len(),
        distinct.len()
    );
    ensure!(
        distinct.len() == N && addrs.len() == N,
        "addresses: {addrs:?}"
    );
    let dels: Vec<Result<()>> = std::thread::scope(|s| {
        let hs: Vec<_> = rts
            .iter()
            .zip(&results)
            .map(|(rt, r)| {
                let runner = &runner;
                let list = &list;
                s.spawn(move || runner.del(list, rt, r.as_ref().ok()).ok().map(|_| ()))
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    for d in dels {
        d?;
    }
    let left = walk(&env.data_dir().join("knt-many"))
        .into_iter()
        .filter(|f| {
            Path::new(f)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok())
        })
        .count();
    ensure!(left == 0, "{left} reservations left after DEL");
    Ok(())
}

#[test]
fn del_after_the_netns_is_gone_succeeds() -> Result<()> {
    let mut env = Env::new()?;
    let list = conflist("knt-gone", &env.data_dir());
    let rt = Runtime::new("knt-gone", Some(&env.c.path()), "eth0");
    let runner = Runner::new(netns_tests::knit_dir(), env.host.ns());
    let result = runner.add(&list, &rt).ok()?.clone();
    drop(runner);
    env.c.delete()?;
    let runner = env.runner();
    // A runtime that still passes the stale path, then one that passes none (containerd).
    runner
        .del(&list, &rt, Some(&result))
        .ok()
        .context("DEL with a stale netns path")?;
    let mut rt = rt;
    rt.netns = None;
    runner
        .del(&list, &rt, Some(&result))
        .ok()
        .context("DEL with CNI_NETNS empty")?;
    let left: Vec<String> = walk(&env.data_dir())
        .into_iter()
        .filter(|f| f.contains("10.244."))
        .collect();
    ensure!(left.is_empty(), "reservations left: {left:?}");
    Ok(())
}

#[test]
fn version_lists_every_spec_version() -> Result<()> {
    let env = Env::new()?;
    let runner = env.runner();
    let mut failed = Vec::new();
    for plugin in [
        "bridge",
        "host-local",
        "static",
        "loopback",
        "portmap",
        "firewall",
        "tuning",
        "sbr",
    ] {
        let call = runner.version(plugin, "1.0.0");
        let got = call
            .outcome
            .as_ref()
            .ok()
            .and_then(|v| v.get("supportedVersions").cloned());
        let ok = got.as_ref().and_then(Value::as_array).is_some_and(|vs| {
            ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
                .iter()
                .all(|w| vs.iter().any(|v| v == w))
        });
        println!(
            "{} VERSION ({:.1} ms): {got:?}",
            plugin,
            call.elapsed.as_secs_f64() * 1e3
        );
        if !ok {
            failed.push(plugin);
        }
    }
    ensure!(
        failed.is_empty(),
        "VERSION misses spec versions: {failed:?}"
    );
    Ok(())
}
