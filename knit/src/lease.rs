//! A sandbox's lease: `RUN_DIR/sandboxes/<sandbox id>`, a file that the process changing the
//! sandbox holds `flock`ed, and whose content is one word saying what it is doing
//! ([`State`]). The kernel drops the lock when that process dies, even by `kill -9`, so a
//! lease that can be taken while its word is not [`State::Ready`] is the trace of a CLI killed
//! mid-way, and the repair pass ([`crate::repair`]) finishes or undoes that work; a lease held
//! by a live process (a `knit run` whose command still runs) is never touched.
//!
//! The file lives as long as the sandbox (made before its record, removed after it), so it is
//! also what ties a `knit-*` namespace to this run dir: a lease without a sandbox record names
//! a namespace that this store made and lost.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::sandbox::Dirs;

/// What the holder of a lease is doing; the last word written stays after it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// `knit run` is making the sandbox, or runs the command of one without `--name`: a
    /// sandbox left in this state is removed.
    Creating,
    /// Set up and kept (`--name`): only its endpoints are checked.
    Ready,
    /// `network connect|disconnect` is changing its endpoints: they are checked.
    Changing,
    /// `sandbox rm` started: a sandbox left in this state is removed.
    Removing,
}

impl State {
    /// Every word has 8 bytes, so [`Lease::set`] overwrites the last one in one `pwrite`: a
    /// kill cannot leave half a word or an empty file behind.
    fn word(self) -> &'static str {
        match self {
            State::Creating => "creating",
            State::Ready => "ready   ",
            State::Changing => "changing",
            State::Removing => "removing",
        }
    }

    /// An empty or unknown word (a file made by `wait` for a sandbox older than leases) is
    /// `Ready`: nothing says it is half made.
    fn parse(s: &str) -> State {
        match s.trim() {
            "creating" => State::Creating,
            "changing" => State::Changing,
            "removing" => State::Removing,
            _ => State::Ready,
        }
    }
}

/// How long [`Lease::wait_for`] waits.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The directory of the leases.
pub fn dir(dirs: &Dirs) -> PathBuf {
    dirs.run_dir.join("sandboxes")
}

/// The word in a lease file read without its lock (a hint: act only on the lease taken).
pub fn peek(path: &Path) -> State {
    State::parse(&std::fs::read_to_string(path).unwrap_or_default())
}

/// A held lease; dropping it unlocks (the word stays).
#[derive(Debug)]
pub struct Lease {
    file: File,
    path: PathBuf,
}

impl Lease {
    /// Take the lease of `sandbox_id`, waiting for its holder.
    pub fn wait(dirs: &Dirs, sandbox_id: &str) -> Result<Lease> {
        Self::take(&dir(dirs).join(sandbox_id), true)?
            .with_context(|| format!("the lease of sandbox {sandbox_id}"))
    }

    /// Take the lease of `sandbox_id`, waiting up to [`WAIT`] for its holder: a `knit run`
    /// without `--name` holds its sandbox's for as long as its command runs.
    pub fn wait_for(dirs: &Dirs, sandbox_id: &str) -> Result<Lease> {
        let t = std::time::Instant::now();
        loop {
            if let Some(l) = Self::try_take(dirs, sandbox_id)? {
                return Ok(l);
            }
            if t.elapsed() > WAIT {
                bail!(
                    "sandbox {sandbox_id} is busy: another knit process is changing it or runs \
                     its command (knit run without --name)"
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Take the lease of `sandbox_id` if nobody holds it.
    pub fn try_take(dirs: &Dirs, sandbox_id: &str) -> Result<Option<Lease>> {
        Self::take(&dir(dirs).join(sandbox_id), false)
    }

    /// Take the lease file at `path`, made when missing. A file unlinked by its previous holder
    /// (a removed sandbox) while this one waited is not the lease any more: open again.
    pub fn take(path: &Path, block: bool) -> Result<Option<Lease>> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            let op = if block {
                libc::LOCK_EX
            } else {
                libc::LOCK_EX | libc::LOCK_NB
            };
            // SAFETY: flock(2) on an fd this function owns.
            if unsafe { libc::flock(file.as_raw_fd(), op) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EWOULDBLOCK) && !block {
                    return Ok(None);
                }
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
            let same = match (file.metadata(), std::fs::metadata(path)) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if same {
                return Ok(Some(Lease {
                    file,
                    path: path.to_path_buf(),
                }));
            }
        }
    }

    pub fn state(&mut self) -> State {
        State::parse(&self.text())
    }

    /// The file's content.
    pub fn text(&mut self) -> String {
        let mut s = String::new();
        let _ = self.file.rewind();
        let _ = self.file.read_to_string(&mut s);
        s
    }

    /// Write the word (not synced: the run dir is a tmpfs, gone with the namespaces at boot).
    pub fn set(&mut self, state: State) -> Result<()> {
        self.file
            .write_all_at(state.word().as_bytes(), 0)
            .with_context(|| format!("writing {}", self.path.display()))
    }

    /// Replace the file's content with `text` (a note for whoever finds the lease free).
    pub fn put(&mut self, text: &str) -> Result<()> {
        let write = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            f.write_all(text.as_bytes())
        };
        write(&mut self.file).with_context(|| format!("writing {}", self.path.display()))
    }

    /// Delete the lease with the sandbox (the lock goes when `self` drops).
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lease_is_refused_and_its_word_stays() {
        let d = std::env::temp_dir().join(format!("knit-lease-{}", std::process::id()));
        let dirs = Dirs {
            run_dir: d.clone(),
            cni_data_dir: d.join("cni"),
        };
        let mut l = Lease::wait(&dirs, "sb1").unwrap();
        assert_eq!(
            l.state(),
            State::Ready,
            "a new lease says nothing is half made"
        );
        l.set(State::Creating).unwrap();
        assert!(Lease::try_take(&dirs, "sb1").unwrap().is_none(), "held");
        drop(l);
        let mut l = Lease::try_take(&dirs, "sb1").unwrap().expect("free again");
        assert_eq!(l.state(), State::Creating);
        l.set(State::Ready).unwrap();
        assert_eq!(l.state(), State::Ready);
        l.remove();
        assert!(!dir(&dirs).join("sb1").exists());
        let _ = std::fs::remove_dir_all(&d);
    }
}
