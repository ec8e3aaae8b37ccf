//! The filesystems the gateway writes to: how much room they have, the
//! default free-space floor of the spool (`spool.min_free_bytes`), and the
//! rule for non-essential files (the status file, the catalog snapshot): they
//! never take the room the spool needs.
//!
//! A leaf like `clock`: every stage may use it. It reads the filesystem with
//! `statvfs` and writes nothing itself; what the spool does below its floor is
//! in `spool::space`.

// statvfs's fields are 64 bits here but 32 on armv7: the casts are not all no-ops.
#![allow(clippy::unnecessary_cast)]

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const MIB: u64 = 1 << 20;

/// The default floor is this share of the filesystem ...
const DEFAULT_MIN_FREE_SHARE: u64 = 100;
/// ... but at least this ...
const DEFAULT_MIN_FREE_LEAST: u64 = 8 * MIB;
/// ... and at most this: a 64 GB card need not keep 640 MiB empty.
const DEFAULT_MIN_FREE_MOST: u64 = 64 * MIB;

/// Room on one filesystem, as `statvfs` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filesystem {
    /// Bytes an unprivileged process may still write (`f_bavail`).
    pub free_bytes: u64,
    /// The filesystem's size.
    pub total_bytes: u64,
}

/// The filesystem holding `path`, or its directory when `path` does not exist yet.
pub fn filesystem(path: &Path) -> io::Result<Filesystem> {
    let target = if path.exists() {
        path
    } else {
        match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        }
    };
    let c_path = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    // SAFETY: an all-zero statvfs is a valid value of a plain C struct.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is NUL-terminated; statvfs writes only into `stat`.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let block = stat.f_frsize as u64;
    Ok(Filesystem {
        free_bytes: (stat.f_bavail as u64).saturating_mul(block),
        total_bytes: (stat.f_blocks as u64).saturating_mul(block),
    })
}

/// `spool.min_free_bytes` when the config does not set it: 1% of the
/// filesystem, at least 8 MiB and at most 64 MiB.
pub fn default_min_free(total_bytes: u64) -> u64 {
    (total_bytes / DEFAULT_MIN_FREE_SHARE).clamp(DEFAULT_MIN_FREE_LEAST, DEFAULT_MIN_FREE_MOST)
}

/// The floor in force: the configured one, else the default for the
/// filesystem of `path` (8 MiB when that cannot be read).
pub fn min_free_bytes(configured: Option<u64>, path: &Path) -> u64 {
    configured.unwrap_or_else(|| {
        filesystem(path).map_or(DEFAULT_MIN_FREE_LEAST, |fs| {
            default_min_free(fs.total_bytes)
        })
    })
}

/// Whether a non-essential file of about `bytes` may be written beside
/// `path` and leave `keep_free` on its filesystem for the spool. When the
/// filesystem cannot be read, the write is tried (it fails on its own).
pub fn leaves_room(path: &Path, bytes: u64, keep_free: u64) -> bool {
    filesystem(path).map_or(true, |fs| fs.free_bytes >= keep_free.saturating_add(bytes))
}

/// `1.5 MiB`, `312 KiB`, `0 B`: a size for people.
pub fn describe_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_floor_is_a_share_of_the_filesystem_within_bounds() {
        assert_eq!(default_min_free(16 * MIB), 8 * MIB, "tiny: at least 8 MiB");
        assert_eq!(
            default_min_free(2048 * MIB),
            2048 * MIB / 100,
            "1% of 2 GiB"
        );
        assert_eq!(
            default_min_free(64 << 30),
            64 * MIB,
            "large: at most 64 MiB"
        );
        assert_eq!(min_free_bytes(Some(3 * MIB), Path::new("/")), 3 * MIB);
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(describe_bytes(0), "0 B");
        assert_eq!(describe_bytes(1536), "1.5 KiB");
        assert_eq!(describe_bytes(3 * MIB), "3.0 MiB");
        assert_eq!(describe_bytes(200 * MIB), "200 MiB");
    }

    #[test]
    fn a_missing_file_is_measured_by_its_directory() {
        let fs = filesystem(Path::new("/proc/definitely-not-here/x"));
        assert!(fs.is_err(), "no such directory either");
        let fs = filesystem(&std::env::temp_dir().join("no-such-file")).unwrap();
        assert!(fs.total_bytes > 0);
    }
}
