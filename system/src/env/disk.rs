//! A node's disk: a flat namespace of files with explicit durability.
//!
//! Written bytes are pending until [`Disk::sync`] makes that file durable. [`RealDisk`] maps
//! this onto files under a directory and `fsync`. [`SimDisk`] keeps, per file, the durable
//! bytes and the pending writes; [`SimDisk::crash`] drops every pending write, as a power loss
//! drops the page cache. [`SimDisk::crash`] can also tear the last pending write, keeping a
//! prefix of it.
//!
//! [`SimDisk::fail_syncs`] makes syncs fail, as a failing device does.
//!
//! [`SimDisk::set_sync_delay`] makes syncs slow, as a worn or overloaded device does. The trait
//! stays synchronous: a sync's bytes are durable when the call returns, and the device reports
//! through [`Disk::syncs_done_at`] when it will have finished the syncs asked of it so far. It
//! works them off one after another, each taking the delay, so a sync asked for while another
//! is still running finishes a delay after that one. The caller awaits that moment on the
//! runtime's clock before it treats the sync as done (the storage engine holds back the
//! acknowledgment). A real disk's fsync already took its time when it returns, so
//! [`RealDisk`] reports nothing.
//!
//! Not modelled: directories (names are flat), metadata durability apart from data (a rename or
//! remove is durable at once), full disks, slow reads and writes (only syncs slow down), and a
//! crash in the middle of a slow sync losing its bytes (they are durable once the call
//! returns; the write was not acknowledged yet, so keeping it is allowed).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The file operations a node's storage engine uses.
pub trait Disk: Send + Sync + 'static {
    /// Appends `bytes` to `name`, creating it if absent. Pending until synced.
    fn append(&self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Writes `bytes` at `offset` in `name`, creating and extending it as needed.
    fn write_at(&self, name: &str, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Makes every write to `name` so far durable.
    fn sync(&self, name: &str) -> io::Result<()>;
    /// Reads all of `name` as the node currently sees it (durable plus pending).
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// Lists file names, sorted.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes `name`.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// When the device will have finished every sync asked of it so far, if that is still
    /// ahead: a slow device's syncs cost time the caller must wait out. `None` when every
    /// sync was complete on return, as on a real disk (the default).
    fn syncs_done_at(&self) -> Option<tokio::time::Instant> {
        None
    }
}

fn check_name(name: &str) -> io::Result<()> {
    let bad = name.is_empty() || name.contains('/') || name.contains('\\') || name.starts_with('.');
    if bad {
        let msg = format!("invalid file name {name:?}: names are flat and not hidden");
        return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
    }
    Ok(())
}

/// Files under one directory, made durable with `fsync`.
#[derive(Debug, Clone)]
pub struct RealDisk {
    dir: PathBuf,
}

impl RealDisk {
    /// Opens (creating if needed) the directory `dir`.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<Self> {
        fs::create_dir_all(dir.as_ref())?;
        Ok(Self {
            dir: dir.as_ref().to_path_buf(),
        })
    }

    fn path(&self, name: &str) -> io::Result<PathBuf> {
        check_name(name)?;
        Ok(self.dir.join(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        fs::File::open(&self.dir)?.sync_all()
    }
}

// TODO(disk-latency): these calls block the calling task; move them to a blocking pool once
// the engine batches its syncs, so a slow fsync does not stall a runtime worker.
impl Disk for RealDisk {
    fn append(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(name)?)?;
        file.write_all(bytes)
    }

    fn write_at(&self, name: &str, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let path = self.path(name)?;
        let mut file = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(bytes)
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        fs::File::open(self.path(name)?)?.sync_all()
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        fs::File::open(self.path(name)?)?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.path(from)?, self.path(to)?)?;
        self.sync_dir()
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.path(name)?)?;
        self.sync_dir()
    }
}

/// One simulated file: what survives a crash, and what does not yet.
#[derive(Debug, Default, Clone)]
struct SimFile {
    durable: Vec<u8>,
    /// Writes since the last sync, in order: (offset, bytes).
    pending: Vec<(u64, Vec<u8>)>,
}

impl SimFile {
    fn logical_len(&self) -> u64 {
        let durable_len = self.durable.len() as u64;
        let pending_end = self.pending.iter().map(|(off, b)| off + b.len() as u64);
        pending_end.fold(durable_len, u64::max)
    }

    fn apply(base: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(bytes.len());
        if base.len() < end {
            base.resize(end, 0);
        }
        base[start..end].copy_from_slice(bytes);
    }

    fn view(&self) -> Vec<u8> {
        let mut bytes = self.durable.clone();
        for (offset, write) in &self.pending {
            Self::apply(&mut bytes, *offset, write);
        }
        bytes
    }
}

/// What a [`SimDisk::crash`] lost, for the trace.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CrashLoss {
    /// Pending writes dropped whole.
    pub writes_dropped: usize,
    /// Pending bytes dropped (a torn write counts only its lost part).
    pub bytes_dropped: u64,
    /// Whether the last pending write was torn (a prefix kept) instead of dropped.
    pub torn: bool,
}

/// A simulated per-node disk. Clones share the same files, so the simulator keeps one handle
/// across a node's restarts while the node's code gets another.
#[derive(Debug, Default, Clone)]
pub struct SimDisk {
    files: Arc<Mutex<BTreeMap<String, SimFile>>>,
    /// Syncs still to fail (a disk fault); each failed sync leaves its writes pending.
    sync_failures: Arc<std::sync::atomic::AtomicU64>,
    /// How long each sync takes on top of the call (a slow-sync fault), and until when the
    /// device is busy with the syncs asked of it so far.
    slow: Arc<Mutex<SlowDevice>>,
}

#[derive(Debug, Default)]
struct SlowDevice {
    sync_delay: std::time::Duration,
    busy_until: Option<tokio::time::Instant>,
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, SimFile>> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Drops every write not yet synced. With `tear_keep` set, the last pending write of the
    /// file written last keeps that many of its leading bytes (a torn write).
    pub fn crash(&self, tear_keep: Option<usize>) -> CrashLoss {
        let mut files = self.lock();
        let mut loss = CrashLoss::default();

        // 1. Count what goes.
        for file in files.values() {
            loss.writes_dropped += file.pending.len();
            loss.bytes_dropped += file
                .pending
                .iter()
                .map(|(_, b)| b.len() as u64)
                .sum::<u64>();
        }

        // 2. Tear: keep a prefix of the last pending write of the last file that has one.
        if let Some(keep) = tear_keep {
            let last = files.values_mut().rev().find(|f| !f.pending.is_empty());
            if let Some(file) = last {
                if let Some((offset, bytes)) = file.pending.last().cloned() {
                    let kept = keep.min(bytes.len());
                    SimFile::apply(&mut file.durable, offset, &bytes[..kept]);
                    loss.writes_dropped -= 1;
                    loss.bytes_dropped -= kept as u64;
                    loss.torn = kept < bytes.len();
                }
            }
        }

        // 3. Drop the rest.
        for file in files.values_mut() {
            file.pending.clear();
        }
        loss
    }

    /// Makes the next `count` syncs fail with an I/O error, as a failing device does; their
    /// writes stay pending, so a crash afterwards loses them.
    pub fn fail_syncs(&self, count: u64) {
        self.sync_failures
            .store(count, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes every later sync take `delay` longer (zero: syncs are instant again). Syncs the
    /// device is already working off keep the time they were given.
    pub fn set_sync_delay(&self, delay: std::time::Duration) {
        self.slow_device().sync_delay = delay;
    }

    /// The delay each sync currently takes.
    pub fn sync_delay(&self) -> std::time::Duration {
        self.slow_device().sync_delay
    }

    fn slow_device(&self) -> MutexGuard<'_, SlowDevice> {
        self.slow
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Bytes written but not yet synced, over all files.
    pub fn pending_bytes(&self) -> u64 {
        let files = self.lock();
        files
            .values()
            .flat_map(|f| f.pending.iter())
            .map(|(_, b)| b.len() as u64)
            .sum()
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("no file {name:?} on the simulated disk"),
    )
}

impl Disk for SimDisk {
    fn append(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        check_name(name)?;
        let mut files = self.lock();
        let file = files.entry(name.to_string()).or_default();
        let offset = file.logical_len();
        file.pending.push((offset, bytes.to_vec()));
        Ok(())
    }

    fn write_at(&self, name: &str, offset: u64, bytes: &[u8]) -> io::Result<()> {
        check_name(name)?;
        let mut files = self.lock();
        let file = files.entry(name.to_string()).or_default();
        file.pending.push((offset, bytes.to_vec()));
        Ok(())
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        use std::sync::atomic::Ordering;
        let failing = self
            .sync_failures
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if failing.is_ok() {
            let msg = format!("simulated sync failure on {name:?}");
            return Err(io::Error::other(msg));
        }
        let mut files = self.lock();
        let file = files.get_mut(name).ok_or_else(|| not_found(name))?;
        let pending = std::mem::take(&mut file.pending);
        for (offset, bytes) in pending {
            SimFile::apply(&mut file.durable, offset, &bytes);
        }
        drop(files);

        // A slow device queues this sync behind the ones it is still working off.
        let mut slow = self.slow_device();
        if !slow.sync_delay.is_zero() {
            let now = tokio::time::Instant::now();
            let start = slow.busy_until.filter(|busy| *busy > now).unwrap_or(now);
            slow.busy_until = Some(start + slow.sync_delay);
        }
        Ok(())
    }

    fn syncs_done_at(&self) -> Option<tokio::time::Instant> {
        let busy_until = self.slow_device().busy_until?;
        (busy_until > tokio::time::Instant::now()).then_some(busy_until)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let files = self.lock();
        files
            .get(name)
            .map(SimFile::view)
            .ok_or_else(|| not_found(name))
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.lock().keys().cloned().collect())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        check_name(to)?;
        let mut files = self.lock();
        let file = files.remove(from).ok_or_else(|| not_found(from))?;
        files.insert(to.to_string(), file);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.lock()
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| not_found(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_synced_bytes_and_drops_the_rest() {
        let disk = SimDisk::new();
        disk.append("log", b"abc").unwrap();
        disk.sync("log").unwrap();
        disk.append("log", b"defg").unwrap();
        assert_eq!(disk.read("log").unwrap(), b"abcdefg");
        assert_eq!(disk.pending_bytes(), 4);

        let loss = disk.crash(None);
        assert_eq!(
            loss,
            CrashLoss {
                writes_dropped: 1,
                bytes_dropped: 4,
                torn: false
            }
        );
        assert_eq!(disk.read("log").unwrap(), b"abc");
    }

    #[test]
    fn torn_crash_keeps_a_prefix_of_the_last_write() {
        let disk = SimDisk::new();
        disk.append("log", b"abc").unwrap();
        disk.sync("log").unwrap();
        disk.append("log", b"12").unwrap();
        disk.append("log", b"xyz").unwrap();

        let loss = disk.crash(Some(1));
        assert!(loss.torn);
        assert_eq!(loss.bytes_dropped, 4);
        // The tear keeps 1 byte of the last write at its own offset: the first pending write
        // is lost, so a zero-filled gap sits where it was, as on a real disk.
        assert_eq!(disk.read("log").unwrap(), b"abc\0\0x");
    }

    #[test]
    fn a_failed_sync_leaves_its_writes_pending() {
        let disk = SimDisk::new();
        disk.append("log", b"abc").unwrap();
        disk.fail_syncs(1);
        assert!(disk.sync("log").is_err());
        assert_eq!(disk.pending_bytes(), 3);
        disk.sync("log").unwrap();
        assert_eq!(disk.pending_bytes(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_syncs_queue_one_delay_after_another() {
        let disk = SimDisk::new();
        disk.append("log", b"abc").unwrap();
        disk.sync("log").unwrap();
        assert_eq!(disk.syncs_done_at(), None, "a healthy disk owes nothing");

        // Two syncs asked for at once: the second finishes a delay after the first.
        disk.set_sync_delay(std::time::Duration::from_millis(200));
        let start = tokio::time::Instant::now();
        disk.sync("log").unwrap();
        assert_eq!(disk.syncs_done_at(), Some(start + ms(200)));
        disk.sync("log").unwrap();
        assert_eq!(disk.syncs_done_at(), Some(start + ms(400)));
        assert_eq!(disk.pending_bytes(), 0, "the bytes are durable at once");

        // Once the device is idle, a sync costs one delay from when it is asked for.
        tokio::time::sleep(ms(500)).await;
        assert_eq!(disk.syncs_done_at(), None);
        let asked = tokio::time::Instant::now();
        disk.sync("log").unwrap();
        assert_eq!(disk.syncs_done_at(), Some(asked + ms(200)));

        // Healed, later syncs cost nothing; the one already running keeps its time.
        disk.set_sync_delay(std::time::Duration::ZERO);
        disk.sync("log").unwrap();
        assert_eq!(disk.syncs_done_at(), Some(asked + ms(200)));
    }

    fn ms(n: u64) -> std::time::Duration {
        std::time::Duration::from_millis(n)
    }

    #[test]
    fn write_at_overwrites_in_place() {
        let disk = SimDisk::new();
        disk.append("f", b"hello").unwrap();
        disk.write_at("f", 1, b"EL").unwrap();
        disk.sync("f").unwrap();
        disk.crash(None);
        assert_eq!(disk.read("f").unwrap(), b"hELlo");
    }

    #[test]
    fn real_disk_round_trips_and_rejects_paths() {
        let dir = tempfile::tempdir().unwrap();
        let disk = RealDisk::open(dir.path()).unwrap();
        disk.append("a", b"12").unwrap();
        disk.append("a", b"34").unwrap();
        disk.sync("a").unwrap();
        disk.rename("a", "b").unwrap();
        assert_eq!(disk.read("b").unwrap(), b"1234");
        assert_eq!(disk.list().unwrap(), vec!["b".to_string()]);

        let err = disk.append("../escape", b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        disk.remove("b").unwrap();
        assert!(disk.list().unwrap().is_empty());
    }
}
