//! knit's index of one network, `<dataDir>/.knit-ipam/<network>/`: one entry per attachment,
//! `o.<id>@<ifname>` holding `<id>\n<ifname>\n<ip>\n...`, plus a `stamp` saying which state of
//! the reference's directory the index is known to be complete for (see [`observe`]).

use super::file_store::LAST_RESERVED_PREFIX;
use super::IpamError;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::net::IpAddr;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub(super) const ENTRY_PREFIX: &str = "o.";
const STAMP: &str = "stamp";

/// One parsed index entry.
pub(super) struct Entry {
    pub path: PathBuf,
    pub id: String,
    pub ifname: String,
    pub ips: Vec<IpAddr>,
}

#[derive(Debug)]
pub(super) struct Index {
    dir: PathBuf,
}

impl Index {
    pub fn new(dir: PathBuf) -> Index {
        Index { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Entries are spread over 256 bucket directories: creating a file in a directory of
    /// thousands of entries measured about twice as slow on ext4 as in a small one.
    fn path(&self, id: &str, ifname: &str) -> PathBuf {
        let bucket = format!("{:02x}", fnv(id, ifname) & 0xff);
        self.dir.join(bucket).join(entry_name(id, ifname))
    }

    /// Addresses listed for (id, ifname); an entry naming another owner (a hash collision) or
    /// unreadable counts as absent. Unverified: callers check the reservation files.
    pub fn read(&self, id: &str, ifname: &str) -> Vec<IpAddr> {
        match parse_entry(self.path(id, ifname)) {
            Some(e) if e.id == id.trim() && e.ifname == ifname => e.ips,
            _ => Vec::new(),
        }
    }

    /// Replace the entry of (id, ifname); an empty list removes it. A hint, so written in
    /// place and not synced. `Ok(false)` when the entry's file belongs to another attachment
    /// (a hash collision of two over-long names): nothing is written and the caller must stop
    /// trusting the index.
    pub fn write(&self, id: &str, ifname: &str, ips: &[IpAddr]) -> Result<bool, IpamError> {
        let path = self.path(id, ifname);
        if let Some(e) = parse_entry(path.clone()) {
            if e.id != id.trim() || e.ifname != ifname {
                return Ok(false);
            }
        }
        if ips.is_empty() {
            remove_tolerant(&path, "remove index entry")?;
            return Ok(true);
        }
        let mut text = format!("{}\n{}\n", id.trim(), ifname);
        for ip in ips {
            text.push_str(&format!("{ip}\n"));
        }
        match write_in_place(&path, text.as_bytes()) {
            Err(IpamError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
                if let Some(bucket) = path.parent() {
                    fs::create_dir_all(bucket)
                        .map_err(|e| IpamError::io("create dir", bucket, e))?;
                }
                write_in_place(&path, text.as_bytes())?;
            }
            r => r?,
        }
        Ok(true)
    }

    /// Every entry (GC, rebuild).
    pub fn entries(&self) -> Result<Vec<Entry>, IpamError> {
        let io = |e| IpamError::io("read dir", &self.dir, e);
        let mut out = Vec::new();
        for bucket in fs::read_dir(&self.dir).map_err(io)?.flatten() {
            let is_bucket = bucket.file_name().len() == 2 && bucket.path().is_dir();
            if !is_bucket {
                continue;
            }
            for e in fs::read_dir(bucket.path()).map_err(io)?.flatten() {
                let name = e.file_name();
                if name.to_str().is_some_and(|n| n.starts_with(ENTRY_PREFIX)) {
                    out.extend(parse_entry(e.path()));
                }
            }
        }
        Ok(out)
    }

    pub fn stamp(&self) -> Option<String> {
        fs::read_to_string(self.dir.join(STAMP)).ok()
    }

    pub fn set_stamp(&self, stamp: Option<&str>) -> Result<(), IpamError> {
        let path = self.dir.join(STAMP);
        match stamp {
            Some(s) => write_in_place(&path, s.as_bytes()),
            None => remove_tolerant(&path, "remove stamp"),
        }
    }
}

fn parse_entry(path: PathBuf) -> Option<Entry> {
    let text = fs::read_to_string(&path).ok()?;
    let mut lines = text.lines();
    let id = lines.next()?.to_string();
    let ifname = lines.next()?.to_string();
    let ips = lines.filter_map(|l| l.parse().ok()).collect();
    Some(Entry {
        path,
        id,
        ifname,
        ips,
    })
}

/// The state of the reference's directory that matters for completeness: the directory's inode,
/// mtime and ctime (changed by every reservation created or removed) and the content of
/// `last_reserved_ip.0` and `.1` (rewritten by every successful ADD, whatever the timestamp
/// granularity). If this equals the stamp knit wrote at the end of its own last operation, no
/// one else has reserved anything since, so the index is complete.
pub(super) fn observe(dir_file: &File, net_dir: &Path) -> Option<String> {
    let m = dir_file.metadata().ok()?;
    let mut s = format!(
        "v1 {} {} {} {} {}\n",
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    );
    for set in 0..2 {
        let p = net_dir.join(format!("{LAST_RESERVED_PREFIX}{set}"));
        s.push_str(fs::read_to_string(p).unwrap_or_default().trim());
        s.push('\n');
    }
    Some(s)
}

/// File name of the entry of (id, ifname): the escaped pair, or a hash of it when too long for
/// a file name (collisions are caught because the entry names its owner).
fn entry_name(id: &str, ifname: &str) -> String {
    let mut s = String::from(ENTRY_PREFIX);
    escape_into(&mut s, id.trim());
    s.push('@');
    escape_into(&mut s, ifname);
    if s.len() <= 240 {
        return s;
    }
    format!("{ENTRY_PREFIX}h{:016x}", fnv(id, ifname))
}

/// FNV-1a, 64 bit, of `id \0 ifname`: stable across builds, as on-disk names must be.
fn fnv(id: &str, ifname: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.trim().bytes().chain([0u8]).chain(ifname.bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn escape_into(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// Overwrite from offset 0, then cut to length. Never truncates to zero first: on ext4 that
/// (like rename over an existing file) forces a data flush (`auto_da_alloc`), which made ADD
/// cost grow with journal load.
pub(super) fn write_in_place(path: &Path, data: &[u8]) -> Result<(), IpamError> {
    let io = |e| IpamError::io("write", path, e);
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(io)?;
    f.write_all_at(data, 0).map_err(io)?;
    f.set_len(data.len() as u64).map_err(io)
}

pub(super) fn remove_tolerant(path: &Path, op: &'static str) -> Result<(), IpamError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(IpamError::io(op, path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::file_store_tests::TempDir;

    #[test]
    fn entries_round_trip_and_collisions_are_refused() {
        let t = TempDir::new("index");
        let idx = Index::new(t.0.clone());
        let ips: Vec<IpAddr> = vec![
            "10.244.0.2".parse().unwrap(),
            "fd00:6b6e::2".parse().unwrap(),
        ];
        assert!(idx.write("c1", "eth0", &ips).unwrap());
        assert_eq!(idx.read("c1", "eth0"), ips);
        assert!(idx.read("c1", "eth1").is_empty());
        // Over-long names are hashed; a file there naming someone else is never overwritten.
        let long = "y".repeat(300);
        let p = idx.path(&long, "eth0");
        assert!(p.file_name().unwrap().to_str().unwrap().starts_with("o.h"));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, "someone-else\neth0\n10.244.0.9\n").unwrap();
        assert!(!idx.write(&long, "eth0", &ips).unwrap());
        assert!(idx.read(&long, "eth0").is_empty());
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            "someone-else\neth0\n10.244.0.9\n"
        );
        let mut owners: Vec<String> = idx.entries().unwrap().into_iter().map(|e| e.id).collect();
        owners.sort();
        assert_eq!(owners, ["c1", "someone-else"]);
        // Shorter content overwrites in place and is cut to length.
        assert!(idx.write("c1", "eth0", &ips[..1]).unwrap());
        assert_eq!(idx.read("c1", "eth0"), ips[..1]);
        assert!(idx.write("c1", "eth0", &[]).unwrap());
        assert!(idx.read("c1", "eth0").is_empty());
    }
}
