//! What each attachment's ADD programmed, one small JSON file per (attachment, feature), so that
//! DEL and GC work from (network, container id, ifname) alone.
//!
//! Layout: `<dir>/<id>.<feature>.json` where `<id>` is [`Attachment::id`]; the file holds the
//! attachment itself and its elements. Written to a temp file and renamed into place (not
//! fsynced: see [`StateDir::write`]).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::NftError;
use super::plan::{Elem, COMMENT_MAX};

/// Default state dir: `nft` under [`crate::DEFAULT_STATE_ROOT`]; callers pass another one as a
/// value ([`crate::StateRoot::nft`], [`super::Nft::at`]).
pub const DEFAULT_STATE_DIR: &str = "/run/cni/knit/nft";
const LOCK_FILE: &str = ".lock";

/// One container interface on one network: the identity CNI DEL gives us.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Attachment {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

impl Attachment {
    pub fn new(network: &str, container_id: &str, ifname: &str) -> Attachment {
        Attachment {
            network: network.into(),
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }

    /// A stable 64-bit FNV-1a hash of the identity, in hex: file names and element comments.
    pub fn id(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for part in [&self.network, &self.container_id, &self.ifname] {
            for b in part.bytes().chain(std::iter::once(0)) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        format!("{h:016x}")
    }

    /// `knit:<id> <network>/<cid[..12]>/<ifname>`, cut to what nft keeps and stripped of quotes.
    /// GC reads back only the `knit:<id>` token.
    pub fn comment(&self) -> String {
        let cid: String = self.container_id.chars().take(12).collect();
        let mut c = format!(
            "knit:{} {}/{}/{}",
            self.id(),
            self.network,
            cid,
            self.ifname
        );
        c.retain(|ch| ch != '"' && ch != '\\' && !ch.is_control());
        c.truncate(COMMENT_MAX - 1);
        while !c.is_char_boundary(c.len()) {
            c.pop();
        }
        c
    }
}

impl std::fmt::Display for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.network, self.container_id, self.ifname)
    }
}

/// The per-attachment features (masq and spoofchk by the bridge plugin, the others by theirs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Feature {
    Masq,
    Portmap,
    Firewall,
    Spoofchk,
    /// A service's virtual address and its backends (the attachment is network / service id /
    /// `svc`).
    Service,
}

impl Feature {
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Masq => "masq",
            Feature::Portmap => "portmap",
            Feature::Firewall => "firewall",
            Feature::Spoofchk => "spoofchk",
            Feature::Service => "service",
        }
    }
}

/// The content of one state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub attachment: Attachment,
    pub feature: Feature,
    pub elems: Vec<Elem>,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

/// An exclusive flock on `<dir>/.lock`, released on drop.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> StateDir {
        StateDir { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, att: &Attachment, feature: Feature) -> PathBuf {
        self.dir
            .join(format!("{}.{}.json", att.id(), feature.as_str()))
    }

    fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> NftError {
        let path = path.display().to_string();
        move |source| NftError::State { op, path, source }
    }

    /// Take the directory's lock (skeleton creation is serialised by it).
    pub fn lock(&self) -> Result<Lock, NftError> {
        std::fs::create_dir_all(&self.dir).map_err(Self::io("mkdir", &self.dir))?;
        let path = self.dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Self::io("open", &path))?;
        // SAFETY: flock on an fd we own; blocks until the lock is ours.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(Self::io("flock", &path)(std::io::Error::last_os_error()));
        }
        Ok(Lock { _file: file })
    }

    pub fn read(&self, att: &Attachment, feature: Feature) -> Result<Option<Record>, NftError> {
        read_record(&self.path(att, feature))
    }

    /// Write the record: temp file, rename over the old one. Not fsynced: the elements it
    /// describes live in the kernel and die with it, so after a power loss a record lost or cut
    /// short describes nothing (DEL then sweeps by comment); a process crash loses nothing.
    pub fn write(&self, rec: &Record) -> Result<(), NftError> {
        std::fs::create_dir_all(&self.dir).map_err(Self::io("mkdir", &self.dir))?;
        let path = self.path(&rec.attachment, rec.feature);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let body = serde_json::to_vec(rec).map_err(|e| NftError::StateContent {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        let mut f = File::create(&tmp).map_err(Self::io("create", &tmp))?;
        f.write_all(&body).map_err(Self::io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(Self::io("rename", &path))
    }

    /// Remove the record; a missing one is fine.
    pub fn remove(&self, att: &Attachment, feature: Feature) -> Result<(), NftError> {
        let path = self.path(att, feature);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Self::io("remove", &path)(e)),
            _ => Ok(()),
        }
    }

    /// Every record in the directory (for GC). Unreadable files are skipped.
    pub fn list(&self) -> Result<Vec<Record>, NftError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            r => r.map_err(Self::io("readdir", &self.dir))?,
        };
        let mut out = Vec::new();
        for entry in rd.flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|x| x == "json") {
                if let Ok(Some(r)) = read_record(&p) {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }
}

fn read_record(path: &Path) -> Result<Option<Record>, NftError> {
    match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateDir::io("read", path)(e)),
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| NftError::StateContent {
                path: path.display().to_string(),
                detail: e.to_string(),
            }),
    }
}
