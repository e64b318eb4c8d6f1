//! The on-disk store, byte-compatible with the reference host-local (see the design note in
//! [`super`]): `<dataDir>/<network>/<ip>` = `<containerID>\r\n<ifname>`,
//! `<dataDir>/<network>/last_reserved_ip.<set>` = the address, `<dataDir>/<network>/lock`
//! flock'ed; plus knit's index `<dataDir>/.knit-ipam/<network>/`, outside the reference's sight.

use super::index::{observe, remove_tolerant, write_in_place, Index};
use super::store::{IpamStore, LockedStore, Lookup, Reservation};
use super::IpamError;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The reference's line break between container ID and ifname (`disk.LineBreak`).
pub const LINE_BREAK: &str = "\r\n";
pub const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
pub const LOCK_FILE: &str = "lock";
/// knit's index lives in `<dataDir>/INDEX_DIR/<network>`; a CNI network name cannot start with
/// a dot, so this never collides with a network directory.
pub const INDEX_DIR: &str = ".knit-ipam";

/// The store of one network. Open one per process (or per thread): the lock is an flock on
/// this handle's own open file description, so handles exclude each other.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    index: Index,
    dir_file: File,
    lock_file: File,
    /// Under the lock: the index is known complete (stamp matched, or rebuilt), so lookups
    /// never need to scan.
    trusted: bool,
    /// Directory scans done by this handle (tests check ADD/DEL stay scan-free).
    pub(crate) scans: usize,
    /// With [`FileStore::defer_sync`]: new reservations not yet fsynced, for the caller to
    /// sync (on another thread, beside its kernel work) before it answers.
    unsynced: Option<Vec<(PathBuf, File)>>,
}

/// Reservations written but not yet durable; [`Unsynced::sync`] makes them so.
#[derive(Debug, Default)]
pub struct Unsynced(Vec<(PathBuf, File)>);

impl Unsynced {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// fsync every new reservation (its data and, in the same journal commit, its name).
    pub fn sync(self) -> Result<(), IpamError> {
        for (path, f) in self.0 {
            f.sync_all()
                .map_err(|e| IpamError::io("fsync reservation", &path, e))?;
        }
        Ok(())
    }
}

/// Reject network names that would escape the data dir or hit knit's index dir, before any
/// filesystem access.
pub fn check_network_name(name: &str) -> Result<(), IpamError> {
    let bad = |reason| {
        Err(IpamError::NetworkName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.contains('/') || name.contains('\0') {
        return bad("contains '/' or NUL");
    }
    if name.starts_with('.') {
        return bad("starts with '.'");
    }
    if name.len() > 255 {
        return bad("longer than a file name may be (255 bytes)");
    }
    Ok(())
}

impl FileStore {
    /// Open (creating as needed) the store of `network` under `data_dir`.
    pub fn open(data_dir: &Path, network: &str) -> Result<FileStore, IpamError> {
        check_network_name(network)?;
        let dir = data_dir.join(network);
        let index = data_dir.join(INDEX_DIR).join(network);
        for d in [&dir, &index] {
            fs::create_dir_all(d).map_err(|e| IpamError::io("create dir", d, e))?;
        }
        let dir_file = File::open(&dir).map_err(|e| IpamError::io("open dir", &dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&lock_path)
            .map_err(|e| IpamError::io("open lock", &lock_path, e))?;
        Ok(FileStore {
            dir,
            index: Index::new(index),
            dir_file,
            lock_file,
            trusted: false,
            scans: 0,
            unsynced: None,
        })
    }

    /// Leave the fsync of new reservations to the caller ([`FileStore::take_unsynced`]), who
    /// must sync them before reporting the allocation to anyone: an ADD overlaps the disk flush
    /// with its kernel work instead of waiting for it first.
    pub fn defer_sync(&mut self) {
        self.unsynced.get_or_insert_with(Vec::new);
    }

    /// The reservations written since [`FileStore::defer_sync`] and not yet synced.
    pub fn take_unsynced(&mut self) -> Unsynced {
        Unsynced(
            self.unsynced
                .as_mut()
                .map(std::mem::take)
                .unwrap_or_default(),
        )
    }

    /// `<dataDir>/<network>`, the reference's directory.
    pub fn network_dir(&self) -> &Path {
        &self.dir
    }

    fn flock(&self, op: libc::c_int, what: &'static str) -> Result<(), IpamError> {
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is passed.
            let rc = unsafe { libc::flock(self.lock_file.as_raw_fd(), op) };
            if rc == 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                return Err(IpamError::io(what, self.dir.join(LOCK_FILE), e));
            }
        }
    }

    fn reservation_path(&self, ip: IpAddr) -> PathBuf {
        // Go's net.IP.String() and Rust's Display agree (RFC 5952 for IPv6).
        self.dir.join(ip.to_string())
    }

    /// The reservation file's content, `None` if there is none.
    fn read_reservation(&self, ip: IpAddr) -> Result<Option<String>, IpamError> {
        let p = self.reservation_path(ip);
        match fs::read_to_string(&p) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(IpamError::io("read reservation", p, e)),
        }
    }

    /// Keep only the addresses whose reservation file names (id, ifname).
    fn verified(&self, id: &str, ifname: &str, ips: &[IpAddr]) -> Result<Vec<IpAddr>, IpamError> {
        let want = owner_line(id, ifname);
        let mut out = Vec::with_capacity(ips.len());
        for ip in ips {
            if self
                .read_reservation(*ip)?
                .is_some_and(|c| c.trim() == want)
            {
                out.push(*ip);
            }
        }
        Ok(out)
    }

    /// Create `dst` holding `data` unless it exists; it appears complete or not at all, and is
    /// durable when this returns. The content goes to a temp file that is hard-linked into
    /// place, then that inode is fsynced once: the link is in the same journal transaction (ext4,
    /// xfs) or logged with the inode (btrfs), so one disk flush covers data and name. A flush is
    /// ~4 ms on this machine's disk: the second one a separate directory fsync would cost is
    /// most of an ADD.
    fn create_exclusive(&mut self, dst: &Path, data: &[u8]) -> Result<bool, IpamError> {
        let tmp = self.index.dir().join("tmp.reserve");
        let f = write_unsynced(&tmp, data)?;
        let linked = fs::hard_link(&tmp, dst);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                match &mut self.unsynced {
                    Some(later) => later.push((dst.to_path_buf(), f)),
                    None => f
                        .sync_all()
                        .map_err(|e| IpamError::io("fsync reservation", dst, e))?,
                }
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            // No hard links across mounts or on this filesystem: O_EXCL, write, fsync.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV | libc::EPERM)) => {
                create_excl_direct(dst, data)
            }
            Err(e) => Err(IpamError::io("link reservation", dst, e)),
        }
    }

    fn sync_dir(&self) -> Result<(), IpamError> {
        self.dir_file
            .sync_all()
            .map_err(|e| IpamError::io("fsync dir", &self.dir, e))
    }

    /// Every reservation file of the network (names that parse as addresses).
    fn scan(&mut self) -> Result<Vec<Reservation>, IpamError> {
        self.scans += 1;
        let rd = fs::read_dir(&self.dir).map_err(|e| IpamError::io("read dir", &self.dir, e))?;
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| IpamError::io("read dir", &self.dir, e))?;
            let Some(ip) = ent
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<IpAddr>().ok())
            else {
                continue;
            };
            // Tolerant like the reference: an unreadable entry (a directory, EACCES) is skipped.
            if let Ok(Some(text)) = self.read_reservation(ip) {
                let (id, ifname) = parse_owner(&text);
                out.push(Reservation { ip, id, ifname });
            }
        }
        Ok(out)
    }

    /// The reference's matching: `<id>\r\n<ifname>`, or else the old `<id>`-only format.
    fn scan_owner(&mut self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, IpamError> {
        let all = self.scan()?;
        let pick = |old: bool| -> Vec<IpAddr> {
            all.iter()
                .filter(|r| r.id == id.trim())
                .filter(|r| match &r.ifname {
                    Some(n) => !old && n == ifname,
                    None => old,
                })
                .map(|r| r.ip)
                .collect()
        };
        let new = pick(false);
        Ok(if new.is_empty() { pick(true) } else { new })
    }

    /// The index cannot be made complete (see [`Index::write`]): scan until a rebuild succeeds.
    fn distrust(&mut self) {
        self.trusted = false;
        let _ = self.index.set_stamp(None);
    }

    /// Make the index list every reservation of the directory (one scan). `Ok(false)` when
    /// that is impossible: reservations in the reference's old format (container ID only, no
    /// ifname to key them by) or an entry name collision. Lookups then keep scanning.
    fn rebuild_index(&mut self) -> Result<bool, IpamError> {
        let mut want: BTreeMap<(String, String), Vec<IpAddr>> = BTreeMap::new();
        for r in self.scan()? {
            let Some(ifname) = r.ifname else {
                return Ok(false);
            };
            want.entry((r.id, ifname)).or_default().push(r.ip);
        }
        for e in self.index.entries()? {
            let key = (e.id, e.ifname);
            let mut listed = e.ips;
            listed.sort();
            match want.get_mut(&key) {
                Some(ips) => {
                    ips.sort();
                    if *ips == listed {
                        want.remove(&key);
                    }
                }
                None => remove_tolerant(&e.path, "remove index entry")?,
            }
        }
        for ((id, ifname), ips) in &want {
            if !self.index.write(id, ifname, ips)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn remove_reservation(&self, ip: IpAddr) -> Result<bool, IpamError> {
        match fs::remove_file(self.reservation_path(ip)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(IpamError::io(
                "remove reservation",
                self.reservation_path(ip),
                e,
            )),
        }
    }
}

/// The held flock of a [`FileStore`]: every reservation call goes through it. Dropping it (or
/// [`LockedStore::unlock`]) writes the index stamp and releases the flock.
#[derive(Debug)]
pub struct FileLocked<'a> {
    store: &'a mut FileStore,
    /// `unlock` already ran: the drop has nothing left to do.
    done: bool,
}

impl IpamStore for FileStore {
    type Locked<'a> = FileLocked<'a>;

    fn lock(&mut self) -> Result<FileLocked<'_>, IpamError> {
        self.take_lock()?;
        Ok(FileLocked {
            store: self,
            done: false,
        })
    }
}

impl Drop for FileLocked<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.store.release_lock();
        }
    }
}

impl LockedStore for FileLocked<'_> {
    fn reserve(
        &mut self,
        id: &str,
        ifname: &str,
        ip: IpAddr,
        range_set: usize,
    ) -> Result<bool, IpamError> {
        self.store.reserve(id, ifname, ip, Some(range_set))
    }

    fn reserve_fixed(&mut self, id: &str, ifname: &str, ip: IpAddr) -> Result<bool, IpamError> {
        self.store.reserve(id, ifname, ip, None)
    }

    fn last_reserved(&mut self, range_set: usize) -> Result<Option<IpAddr>, IpamError> {
        self.store.last_reserved(range_set)
    }

    fn held_by(&mut self, id: &str, ifname: &str, how: Lookup) -> Result<Vec<IpAddr>, IpamError> {
        self.store.held_by(id, ifname, how)
    }

    fn release_ip(&mut self, ip: IpAddr) -> Result<bool, IpamError> {
        self.store.release_ip(ip)
    }

    fn release_owner(&mut self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, IpamError> {
        self.store.release_owner(id, ifname)
    }

    fn reservations(&mut self) -> Result<Vec<Reservation>, IpamError> {
        self.store.scan()
    }

    fn forget_unless(&mut self, keep: &dyn Fn(&str, &str) -> bool) -> Result<(), IpamError> {
        self.store.forget_unless(keep)
    }

    fn unlock(mut self) -> Result<(), IpamError> {
        self.done = true;
        self.store.release_lock()
    }
}

/// The operations under the flock; only [`FileLocked`] calls them.
impl FileStore {
    fn take_lock(&mut self) -> Result<(), IpamError> {
        self.flock(libc::LOCK_EX, "flock")?;
        let seen = observe(&self.dir_file, &self.dir);
        self.trusted = seen.is_some() && self.index.stamp() == seen;
        if !self.trusted && seen.is_some() {
            // Someone else (the reference plugin, or a knit that crashed mid-way) changed the
            // directory since knit last looked: make the index complete again, once.
            self.trusted = self.rebuild_index().unwrap_or(false);
            if !self.trusted {
                let _ = self.index.set_stamp(None);
            }
        }
        Ok(())
    }

    /// Write the stamp (the end of every locked operation), then release the flock.
    fn release_lock(&mut self) -> Result<(), IpamError> {
        if std::mem::take(&mut self.trusted) {
            let now = observe(&self.dir_file, &self.dir);
            if now != self.index.stamp() {
                let _ = self.index.set_stamp(now.as_deref());
            }
        }
        self.flock(libc::LOCK_UN, "unlock")
    }

    /// Reserve, and remember `ip` as the last of `range_set` if given.
    fn reserve(
        &mut self,
        id: &str,
        ifname: &str,
        ip: IpAddr,
        range_set: Option<usize>,
    ) -> Result<bool, IpamError> {
        let path = self.reservation_path(ip);
        if fs::symlink_metadata(&path).is_ok() {
            return Ok(false);
        }
        // Index first: a crash may leave an index entry without reservation (filtered out by
        // verification), never a reservation the index does not list.
        let mut ips = self.verified(id, ifname, &self.index.read(id, ifname))?;
        ips.push(ip);
        if !self.index.write(id, ifname, &ips)? {
            self.distrust();
        }
        if !self.create_exclusive(&path, owner_line(id, ifname).as_bytes())? {
            return Ok(false);
        }
        if let Some(range_set) = range_set {
            let last = self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_set}"));
            // In place like the reference, and not synced: it is a hint (unparsable or stale
            // content only changes where the round robin resumes).
            write_in_place(&last, ip.to_string().as_bytes())?;
        }
        Ok(true)
    }

    fn last_reserved(&mut self, range_set: usize) -> Result<Option<IpAddr>, IpamError> {
        let p = self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_set}"));
        Ok(fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse().ok()))
    }

    fn held_by(&mut self, id: &str, ifname: &str, how: Lookup) -> Result<Vec<IpAddr>, IpamError> {
        let ips = self.verified(id, ifname, &self.index.read(id, ifname))?;
        if ips.is_empty() && how == Lookup::Thorough && !self.trusted {
            return self.scan_owner(id, ifname);
        }
        Ok(ips)
    }

    fn release_ip(&mut self, ip: IpAddr) -> Result<bool, IpamError> {
        let gone = self.remove_reservation(ip)?;
        if gone {
            self.sync_dir()?;
        }
        Ok(gone)
    }

    fn release_owner(&mut self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, IpamError> {
        let ips = self.held_by(id, ifname, Lookup::Thorough)?;
        let mut released = Vec::with_capacity(ips.len());
        for ip in ips {
            if self.remove_reservation(ip)? {
                released.push(ip);
            }
        }
        if !self.index.write(id, ifname, &[])? {
            self.distrust();
        }
        if !released.is_empty() {
            self.sync_dir()?;
        }
        Ok(released)
    }

    fn forget_unless(&mut self, keep: &dyn Fn(&str, &str) -> bool) -> Result<(), IpamError> {
        for e in self.index.entries()? {
            if !keep(&e.id, &e.ifname) {
                remove_tolerant(&e.path, "remove index entry")?;
            }
        }
        Ok(())
    }
}

/// What the reference writes into a reservation file.
fn owner_line(id: &str, ifname: &str) -> String {
    format!("{}{LINE_BREAK}{ifname}", id.trim())
}

fn parse_owner(text: &str) -> (String, Option<String>) {
    let t = text.trim();
    match t.split_once(LINE_BREAK) {
        Some((id, ifname)) => (id.to_string(), Some(ifname.to_string())),
        None => (t.to_string(), None),
    }
}

/// Write `data` to `path` and keep the file open, for the caller to fsync once it is in place.
fn write_unsynced(path: &Path, data: &[u8]) -> Result<fs::File, IpamError> {
    let io = |e| IpamError::io("write", path, e);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    Ok(f)
}

fn create_excl_direct(dst: &Path, data: &[u8]) -> Result<bool, IpamError> {
    let io = |e| IpamError::io("create reservation", dst, e);
    let mut f = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(dst)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(io(e)),
    };
    if let Err(e) = f.write_all(data).and_then(|()| f.sync_all()) {
        let _ = fs::remove_file(dst);
        return Err(io(e));
    }
    Ok(true)
}
