//! The `knit` binary run as a user runs it, inside a scratch "host" namespace (its bridges,
//! veths and nft table live there, never in the real host's) with private `--state-dir`,
//! `--run-dir` and `--cni-data-dir`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{ensure, Context, Result};

use crate::scenario::TempDir;
use crate::topology::TestNs;

pub struct KnitHost {
    pub ns: TestNs,
    pub dir: TempDir,
    pub bin: PathBuf,
}

impl KnitHost {
    /// A fresh namespace and directories named after `tag`; fails without root or binary.
    pub fn new(tag: &str) -> Result<KnitHost> {
        crate::require_root();
        let bin = crate::knit_bin()?;
        Ok(KnitHost {
            ns: TestNs::new(tag)?,
            dir: TempDir::new(tag)?,
            bin,
        })
    }

    /// `knit --state-dir .. --run-dir .. --cni-data-dir ..` in the namespace, no arguments yet.
    pub fn command(&self) -> Command {
        let d = self.dir.path();
        let mut c = self.ns.command(&self.bin.display().to_string());
        c.arg("--state-dir").arg(d.join("state"));
        c.arg("--run-dir").arg(d.join("run"));
        c.arg("--cni-data-dir").arg(d.join("cni"));
        c
    }

    /// Exit status, stdout, stderr of `knit ARGS`.
    pub fn status(&self, args: &[&str]) -> Result<(i32, String, String)> {
        let o = self
            .command()
            .args(args)
            .output()
            .with_context(|| format!("knit {args:?}"))?;
        Ok((
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ))
    }

    /// stdout of `knit ARGS`, which must succeed.
    pub fn knit(&self, args: &[&str]) -> Result<String> {
        let (code, out, err) = self.status(args)?;
        ensure!(code == 0, "knit {args:?} exited {code}: {err}");
        Ok(out)
    }

    /// `knit ARGS` in the background, its output in `DIR/LOG`.
    pub fn spawn(&self, args: &[&str], log: &str) -> Result<Child> {
        let f = std::fs::File::create(self.dir.path().join(log))?;
        self.command()
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("starting knit {args:?}"))
    }

    /// What a background command wrote to `DIR/LOG`.
    pub fn log(&self, log: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(log)).unwrap_or_default()
    }
}
