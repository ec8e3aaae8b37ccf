//! Room on the spool's filesystem: when appends must wait for it, the reserve
//! that lets deletions commit on a full disk, and what `status` shows of it.
//!
//! Three rules (README "A full disk"):
//! - **Floor.** Appends stop while the room (free bytes of the filesystem plus
//!   the spool file's own free pages, which SQLite reuses) is below
//!   `spool.min_free_bytes`, and go on once it is back above the floor plus a
//!   margin, with the reserve in place. Settlements (the drain's deletes)
//!   never wait for room.
//! - **Reserve.** A file of [`RESERVE_BYTES`] beside the spool (`<spool>.reserve`),
//!   made at start. When a commit fails for a full disk (another program
//!   filled it) the writer deletes it, so the deletes of delivered records
//!   and the checkpoint that gives the WAL's room back can still commit. It
//!   is made again once the filesystem has room for it above the floor.
//! - **Told once.** The log says when appends pause and when they resume;
//!   pauses that come and go within a minute are counted, not logged each.
//!
//! The decisions are pure functions ([`appends_allowed`], [`may_make_reserve`]);
//! `Space` measures (statvfs, `PRAGMA freelist_count`) and acts.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::disk::{self, describe_bytes};
use crate::repeating::{Repeating, Report};

/// The reserve file's size: room for the deletes of a few drain rounds and a
/// WAL checkpoint, whatever else fills the disk.
pub const RESERVE_BYTES: u64 = 4 << 20;
/// While appends are paused, the room is measured this often (and after
/// every settlement that deleted records).
pub const PAUSED_RECHECK: Duration = Duration::from_secs(1);
/// While the writer is idle, the room is measured this often, so `status`
/// shows a disk another program filled; commits of appends measure it anyway.
pub const IDLE_RECHECK: Duration = Duration::from_secs(5);
/// How long a measurement that found plenty of room is trusted before appends.
const TRUSTED_FOR: Duration = Duration::from_secs(1);
/// "Plenty": this far above the floor, one second of appends (and of other
/// writers on the filesystem) cannot reach it.
const PLENTY_ABOVE_FLOOR: u64 = 256 << 20;
/// Pauses closer together than this are one episode in the log.
const PAUSE_EPISODE: Duration = Duration::from_secs(60);

/// Room the spool can grow into.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Room {
    /// Free bytes of the filesystem (`statvfs` `f_bavail`).
    pub fs_free: u64,
    /// The spool file's free pages (`freelist_count × page_size`): new rows reuse them.
    pub spool_free: u64,
}

impl Room {
    pub fn total(&self) -> u64 {
        self.fs_free.saturating_add(self.spool_free)
    }
}

/// How far above the floor the room must be before paused appends resume:
/// a quarter of the floor, at least 256 KiB, at most 16 MiB; so that one
/// commit does not pause them again at once.
pub fn resume_margin(floor: u64) -> u64 {
    (floor / 4).clamp(256 << 10, 16 << 20)
}

/// The room appends must leave: the floor, and the reserve's size while the
/// reserve is not in place (released on a full disk, or no room to make it),
/// so appends never take the room deletes need.
fn needed_room(floor: u64, reserve_in_place: bool) -> u64 {
    if reserve_in_place {
        floor
    } else {
        floor.saturating_add(RESERVE_BYTES)
    }
}

/// Whether appends may be committed with `room` left, the floor being
/// `floor`, appends `paused` now and the reserve `reserve_in_place` or not.
/// The filesystem itself must keep some room too (half the resume margin
/// to go on, the whole margin to resume): new rows go through the WAL file
/// before they reach the spool file's free pages.
pub fn appends_allowed(room: Room, floor: u64, paused: bool, reserve_in_place: bool) -> bool {
    let needed = needed_room(floor, reserve_in_place);
    let margin = resume_margin(floor);
    if paused {
        room.total() >= needed.saturating_add(margin) && room.fs_free >= margin
    } else {
        room.total() >= needed && room.fs_free >= margin / 2
    }
}

/// The bytes of records (as counted against `spool.max_bytes`) one commit
/// may add with `room` left: a third of what lies above the room appends
/// must leave, and of the filesystem's free bytes. A group takes its size
/// twice until the WAL is checkpointed (in the WAL, then in the spool file),
/// and rows take more on disk than their data.
pub fn group_budget(room: Room, floor: u64, reserve_in_place: bool) -> u64 {
    let above = room
        .total()
        .saturating_sub(needed_room(floor, reserve_in_place));
    above.min(room.fs_free) / 3
}

/// Whether the reserve may be made (again) with `fs_free` bytes free: it
/// must leave the floor free, or it would pause appends by itself.
pub fn may_make_reserve(fs_free: u64, floor: u64) -> bool {
    fs_free >= floor.saturating_add(RESERVE_BYTES)
}

/// What `spool.max_bytes` can really hold: the filesystem's free bytes and
/// the spool's own files, less the floor and a reserve still to be made.
pub fn capacity(fs_free: u64, spool_files: u64, floor: u64, reserve_made: bool) -> u64 {
    let reserve = if reserve_made { 0 } else { RESERVE_BYTES };
    fs_free
        .saturating_add(spool_files)
        .saturating_sub(floor)
        .saturating_sub(reserve)
}

/// The room as the writer last measured it, for the status file; any thread reads it.
#[derive(Debug, Default)]
pub struct SpaceStatus {
    fs_free: AtomicU64,
    fs_total: AtomicU64,
    spool_free: AtomicU64,
    floor: AtomicU64,
    paused: AtomicBool,
    reserve: AtomicBool,
}

impl SpaceStatus {
    /// Free bytes of the spool's filesystem.
    pub fn fs_free(&self) -> u64 {
        self.fs_free.load(Ordering::Relaxed)
    }
    pub fn fs_total(&self) -> u64 {
        self.fs_total.load(Ordering::Relaxed)
    }
    /// Bytes of free pages inside the spool file.
    pub fn spool_free(&self) -> u64 {
        self.spool_free.load(Ordering::Relaxed)
    }
    /// `spool.min_free_bytes` in force.
    pub fn min_free_bytes(&self) -> u64 {
        self.floor.load(Ordering::Relaxed)
    }
    /// Appends wait for room on the filesystem.
    pub fn appends_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }
    /// The reserve file is in place.
    pub fn reserve_in_place(&self) -> bool {
        self.reserve.load(Ordering::Relaxed)
    }
}

/// The writer's view of the room; lives on the writer thread.
pub(super) struct Space {
    spool_path: PathBuf,
    reserve_path: PathBuf,
    floor: u64,
    page_size: u64,
    status: std::sync::Arc<SpaceStatus>,
    paused: bool,
    reserve_made: bool,
    room: Room,
    checked_at: Instant,
    /// Bytes of records committed since `room` was measured.
    added_since: u64,
    /// Pauses, for the log: the first of an episode is said, the rest counted.
    pauses: Repeating,
    /// When the current pause began, and whether its start was logged.
    paused_since: Option<(Instant, bool)>,
}

impl Space {
    /// Measures the filesystem, makes the reserve and warns when
    /// `spool.max_bytes` is more than the filesystem can hold.
    pub(super) fn open(
        spool_path: &Path,
        configured_floor: Option<u64>,
        max_bytes: u64,
        connection: &Connection,
        status: std::sync::Arc<SpaceStatus>,
    ) -> Space {
        let floor = disk::min_free_bytes(configured_floor, spool_path);
        let page_size: i64 = connection
            .query_row("PRAGMA page_size", [], |row| row.get(0))
            .unwrap_or(4096);
        let mut space = Space {
            spool_path: spool_path.to_owned(),
            reserve_path: reserve_path(spool_path),
            floor,
            page_size: page_size.max(512) as u64,
            status,
            paused: false,
            reserve_made: false,
            room: Room::default(),
            checked_at: Instant::now(),
            added_since: 0,
            pauses: Repeating::new(PAUSE_EPISODE),
            paused_since: None,
        };
        space.status.floor.store(floor, Ordering::Relaxed);
        space.reserve_made = reserve_size(&space.reserve_path) >= RESERVE_BYTES;
        space
            .status
            .reserve
            .store(space.reserve_made, Ordering::Relaxed);
        space.measure(connection);
        space.warn_if_max_bytes_cannot_fit(max_bytes);
        if !space.reserve_made {
            space.make_reserve();
        }
        space.measure(connection);
        if !appends_allowed(space.room, floor, false, space.reserve_made) {
            space.pause(None);
        }
        space
    }

    pub(super) fn paused(&self) -> bool {
        self.paused
    }

    /// When the writer should measure again if nothing else makes it.
    pub(super) fn next_check(&self) -> Instant {
        let every = if self.paused {
            PAUSED_RECHECK
        } else {
            IDLE_RECHECK
        };
        self.checked_at + every
    }

    /// Whether the room is tight enough that the WAL should be checkpointed
    /// after each commit rather than grow toward its automatic checkpoint.
    pub(super) fn tight(&self) -> bool {
        // The WAL grows to about 4 MiB before SQLite checkpoints it by itself.
        const WAL_AUTOCHECKPOINT_BYTES: u64 = 4 << 20;
        self.paused
            || !self.reserve_made
            || self.room.fs_free < self.floor.saturating_mul(2) + WAL_AUTOCHECKPOINT_BYTES
    }

    /// The bytes of records the next commit may add ([`group_budget`]), as last measured.
    pub(super) fn group_budget(&self) -> u64 {
        group_budget(self.room, self.floor, self.reserve_made)
    }

    /// Like [`Space::check`] before committing `bytes` of records (0 after a
    /// commit), but the last measurement (statvfs and a read of the
    /// free-list: three system calls and SQLite's locks) is trusted for up
    /// to [`TRUSTED_FOR`] while the room it found, less what was committed
    /// since, stays far above the floor: at field rates that is every commit
    /// of a quiet disk.
    pub(super) fn recheck(&mut self, connection: &Connection, bytes: u64) -> bool {
        let plenty = self.floor.saturating_add(PLENTY_ABOVE_FLOOR);
        let left = self
            .room
            .fs_free
            .saturating_sub(self.added_since.saturating_add(bytes));
        if !self.paused
            && self.reserve_made
            && left > plenty
            && self.checked_at.elapsed() < TRUSTED_FOR
        {
            self.added_since = self.added_since.saturating_add(bytes);
            return true;
        }
        let allowed = self.check(connection);
        if allowed {
            // Measured before these are committed: count them against the room.
            self.added_since = bytes;
        }
        allowed
    }

    /// Measures the room and decides: true when appends may be committed.
    /// Logs a pause or a resume, and makes the reserve again when there is room.
    pub(super) fn check(&mut self, connection: &Connection) -> bool {
        self.measure(connection);
        if !self.reserve_made && may_make_reserve(self.room.fs_free, self.floor) {
            self.make_reserve();
            self.measure(connection);
        }
        let allowed = appends_allowed(self.room, self.floor, self.paused, self.reserve_made);
        match (self.paused, allowed) {
            (false, false) => self.pause(None),
            (true, true) => self.resume(),
            _ => {}
        }
        if !self.paused {
            self.episode_quiet();
        }
        !self.paused
    }

    /// A commit failed because the disk is full: pauses appends and deletes
    /// the reserve so deletions can commit. True when the reserve was there
    /// to release (so a retry can succeed at once).
    pub(super) fn disk_full(&mut self, error: &dyn std::fmt::Display) -> bool {
        let released = self.reserve_made && std::fs::remove_file(&self.reserve_path).is_ok();
        if released {
            self.reserve_made = false;
            self.status.reserve.store(false, Ordering::Relaxed);
            log::warn!(
                "{error}: released the spool's reserve ({} at {}) so delivered records can still be deleted; it is made again once there is room",
                describe_bytes(RESERVE_BYTES),
                self.reserve_path.display()
            );
        }
        if !self.paused {
            self.pause(Some(error));
        }
        released
    }

    fn measure(&mut self, connection: &Connection) {
        let fs = disk::filesystem(&self.spool_path);
        let freelist: i64 = connection
            .query_row("PRAGMA freelist_count", [], |row| row.get(0))
            .unwrap_or(0);
        let (fs_free, fs_total) = match fs {
            Ok(fs) => (fs.free_bytes, fs.total_bytes),
            // Unknown room never pauses: the commit itself tells a full disk.
            Err(_) => (u64::MAX / 2, 0),
        };
        self.room = Room {
            fs_free,
            spool_free: (freelist.max(0) as u64).saturating_mul(self.page_size),
        };
        self.checked_at = Instant::now();
        self.added_since = 0;
        self.status.fs_free.store(fs_free, Ordering::Relaxed);
        self.status.fs_total.store(fs_total, Ordering::Relaxed);
        self.status
            .spool_free
            .store(self.room.spool_free, Ordering::Relaxed);
    }

    fn warn_if_max_bytes_cannot_fit(&self, max_bytes: u64) {
        let spool_files: u64 = ["", "-wal"]
            .iter()
            .map(|suffix| file_size(&with_suffix(&self.spool_path, suffix)))
            .sum();
        let fits = capacity(
            self.room.fs_free,
            spool_files,
            self.floor,
            self.reserve_made,
        );
        if max_bytes > fits {
            log::warn!(
                "spool.max_bytes ({}) is more than the spool's filesystem can hold: {} ({} free, {} in the spool's files, less spool.min_free_bytes {} and the {} reserve); \
                 appends pause when the room runs out (the brokers keep what is not acknowledged) before the spool's own bound is reached",
                describe_bytes(max_bytes),
                describe_bytes(fits),
                describe_bytes(self.room.fs_free),
                describe_bytes(spool_files),
                describe_bytes(self.floor),
                describe_bytes(RESERVE_BYTES)
            );
        }
    }

    fn make_reserve(&mut self) {
        match allocate(&self.reserve_path, RESERVE_BYTES) {
            Ok(()) => {
                self.reserve_made = true;
                log::debug!(
                    "spool reserve of {} at {}",
                    describe_bytes(RESERVE_BYTES),
                    self.reserve_path.display()
                );
            }
            Err(error) => {
                let _ = std::fs::remove_file(&self.reserve_path);
                log::warn!(
                    "cannot make the spool's reserve {} ({}): {error}; tried again once there is room",
                    self.reserve_path.display(),
                    describe_bytes(RESERVE_BYTES)
                );
            }
        }
        self.status
            .reserve
            .store(self.reserve_made, Ordering::Relaxed);
    }

    fn pause(&mut self, cause: Option<&dyn std::fmt::Display>) {
        self.paused = true;
        self.status.paused.store(true, Ordering::Relaxed);
        let now = Instant::now();
        let report = self.pauses.occurred(1, now);
        let why = match cause {
            Some(error) => format!("the disk is full ({error})"),
            None if !self.reserve_made => format!(
                "the spool's filesystem has no room for the spool's reserve ({} free, spool.min_free_bytes = {} and {} of reserve needed)",
                describe_bytes(self.room.fs_free),
                describe_bytes(self.floor),
                describe_bytes(RESERVE_BYTES)
            ),
            None => format!(
                "the spool's filesystem is low on space ({} free, {} reusable in the spool, spool.min_free_bytes = {})",
                describe_bytes(self.room.fs_free),
                describe_bytes(self.room.spool_free),
                describe_bytes(self.floor)
            ),
        };
        let logged = match report {
            Some(Report::Started(_)) => {
                log::warn!(
                    "{why}: new messages are not taken (the brokers keep what is not acknowledged); records are still delivered and deleted"
                );
                true
            }
            Some(Report::Summary { count, over }) => {
                log::warn!(
                    "{why}: appends paused {count} times in the last {}s",
                    over.as_secs()
                );
                false
            }
            _ => {
                log::debug!("{why}: appends paused again");
                false
            }
        };
        self.paused_since = Some((now, logged));
    }

    fn resume(&mut self) {
        self.paused = false;
        self.status.paused.store(false, Ordering::Relaxed);
        let Some((since, logged)) = self.paused_since.take() else {
            return;
        };
        let message = format!(
            "the spool's filesystem has room again ({} free, {} reusable in the spool): appends resumed after {:.1}s",
            describe_bytes(self.room.fs_free),
            describe_bytes(self.room.spool_free),
            since.elapsed().as_secs_f64()
        );
        if logged {
            log::info!("{message}");
        } else {
            log::debug!("{message}");
        }
    }

    /// Ends a pause episode in the log once a minute passed without a pause,
    /// with a count when there was more than the one pause already told.
    fn episode_quiet(&mut self) {
        if let Some(Report::Ended { total, lasted }) = self.pauses.quiet(Instant::now()) {
            if total > 1 {
                log::info!(
                    "appends paused {total} times for room on the spool's filesystem over {}s; none in the last minute",
                    lasted.as_secs()
                );
            }
        }
    }
}

/// `<spool>.reserve`.
pub fn reserve_path(spool_path: &Path) -> PathBuf {
    with_suffix(spool_path, ".reserve")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |metadata| metadata.len())
}

/// Bytes of the reserve file actually allocated (a sparse file reserves nothing).
fn reserve_size(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or(0, |metadata| {
        metadata.len().min(metadata.blocks().saturating_mul(512))
    })
}

/// Allocates `bytes` of real blocks to `path` (posix_fallocate: no data is
/// written where the filesystem supports it).
fn allocate(path: &Path, bytes: u64) -> std::io::Result<()> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    // SAFETY: the descriptor is open for writing; posix_fallocate touches nothing else.
    let code = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, bytes as libc::off_t) };
    if code != 0 {
        return Err(std::io::Error::from_raw_os_error(code));
    }
    Ok(())
}

/// What the spool's probe for the `check` command found.
#[derive(Debug)]
pub enum SpoolProbe {
    /// A file cannot be made in the spool's directory.
    NotWritable { dir: PathBuf, error: std::io::Error },
    /// The spool file exists but cannot be read.
    Unreadable(super::SpoolError),
    /// The directory is writable and the spool (if there is one yet) readable.
    Usable {
        /// What waits in the spool; `None`: no spool file yet (made at the first run).
        contents: Option<super::SpoolSummary>,
        /// Room on its filesystem; `None`: statvfs failed.
        room: Option<ProbedRoom>,
    },
}

/// Room on the spool's filesystem, as the probe measured it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbedRoom {
    pub fs_free: u64,
    pub fs_total: u64,
    /// Free pages in the spool file, which SQLite reuses.
    pub spool_free: u64,
    /// `spool.min_free_bytes` (or its default for this filesystem).
    pub floor: u64,
    /// Whether appends would go on ([`appends_allowed`], reserve in place).
    pub appends_allowed: bool,
}

/// The spool as `check` tries it, without opening it for writing: a file
/// made and removed in its directory, the spool read (read-only) if it
/// exists, the room of its filesystem against the floor. Blocking.
pub fn probe(path: &Path, min_free_bytes: Option<u64>) -> SpoolProbe {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let probe = dir.join(format!(".mkb-check-{}", std::process::id()));
    let written = crate::files::create_private(&probe)
        .and_then(|mut file| std::io::Write::write_all(&mut file, b"check"))
        .and_then(|()| std::fs::remove_file(&probe));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&probe);
        return SpoolProbe::NotWritable {
            dir: dir.to_path_buf(),
            error,
        };
    }
    let (contents, spool_free) = if !path.exists() {
        (None, 0)
    } else {
        match super::SpoolReader::open(path)
            .and_then(|reader| Ok((reader.summary()?, reader.free_page_bytes()?)))
        {
            Ok((summary, spool_free)) => (Some(summary), spool_free),
            Err(error) => return SpoolProbe::Unreadable(error),
        }
    };
    let room = disk::filesystem(path).ok().map(|fs| {
        let floor = disk::min_free_bytes(min_free_bytes, path);
        let room = Room {
            fs_free: fs.free_bytes,
            spool_free,
        };
        ProbedRoom {
            fs_free: fs.free_bytes,
            fs_total: fs.total_bytes,
            spool_free,
            floor,
            appends_allowed: appends_allowed(room, floor, false, true),
        }
    });
    SpoolProbe::Usable { contents, room }
}

#[cfg(test)]
mod tests;
