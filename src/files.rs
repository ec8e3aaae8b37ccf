//! Files the gateway reads from outside and the files it makes, done safely.
//!
//! Reading: a path from the catalog or the config must name a regular file of
//! bounded size: a FIFO would hang the reader, `/dev/zero` would fill memory,
//! a directory is a mistake. Making: the gateway's own files (spool, status,
//! probes) are created without following a symbolic link someone planted, with
//! mode 0600 whatever the umask, since they hold data or secrets.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every file the gateway makes (but the metrics textfile, which
/// node_exporter must read).
pub const PRIVATE_MODE: u32 = 0o600;
/// A certificate or key file, at most: far larger than any chain or key.
pub const MAX_PEM_FILE_BYTES: u64 = 1 << 20;

/// Why a file could not be read whole.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    /// A FIFO, device, directory or socket.
    NotRegular(&'static str),
    TooLarge {
        n_bytes: u64,
        max_bytes: u64,
    },
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(error) => write!(f, "{error}"),
            ReadError::NotRegular(kind) => write!(f, "is not a regular file but {kind}"),
            ReadError::TooLarge { n_bytes, max_bytes } => {
                write!(f, "is {n_bytes} bytes, more than the {max_bytes} allowed")
            }
        }
    }
}

/// The contents of the regular file `path`, at most `max_bytes`; opened
/// without blocking (a FIFO with no writer does not hang the open). A file
/// growing while read is cut at `max_bytes + 1` and refused.
pub fn read_regular(path: &Path, max_bytes: u64) -> Result<Vec<u8>, ReadError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(ReadError::Io)?;
    let metadata = file.metadata().map_err(ReadError::Io)?;
    let file_type = metadata.file_type();
    if !file_type.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let kind = if file_type.is_dir() {
            "a directory"
        } else if file_type.is_fifo() {
            "a FIFO"
        } else if file_type.is_char_device() || file_type.is_block_device() {
            "a device"
        } else if file_type.is_socket() {
            "a socket"
        } else {
            "something else"
        };
        return Err(ReadError::NotRegular(kind));
    }
    let too_large = |n_bytes| ReadError::TooLarge { n_bytes, max_bytes };
    if metadata.len() > max_bytes {
        return Err(too_large(metadata.len()));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Creates `path` anew (it must not exist: `O_EXCL` also refuses a symbolic
/// link there) with mode 0600, for writing.
pub fn create_private(path: &Path) -> io::Result<File> {
    create_new(path, PRIVATE_MODE)
}

/// Creates `path` anew with exactly `mode` (the umask does not count);
/// `O_EXCL` refuses a symbolic link there too.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    // The umask may have taken bits off; set exactly what we mean.
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(file)
}

/// Replaces `path` with `bytes`: written to `temporary` (made anew with
/// `mode`; a link planted there is removed, not followed), then renamed over
/// `path`, so a reader sees the old file or the new one, never half of it.
/// No fsync: for files that describe the moment.
pub fn replace(path: &Path, temporary: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::io::Write;
    let _ = std::fs::remove_file(temporary);
    let result = create_new(temporary, mode)
        .and_then(|mut file| file.write_all(bytes))
        .and_then(|()| std::fs::rename(temporary, path));
    if result.is_err() {
        let _ = std::fs::remove_file(temporary);
    }
    result
}

/// Makes the names in the directory holding `path` (a file just created or
/// renamed there) survive power loss: fsync of the directory itself.
pub fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Makes sure `path` is a regular file of ours: created with mode 0600 when
/// missing; refused when it is a symbolic link (`O_NOFOLLOW`) or not a
/// regular file. An existing file keeps its mode.
pub fn ensure_private_file(path: &Path) -> io::Result<()> {
    let existed = path.symlink_metadata().is_ok();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(PRIVATE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|error| {
            if error.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "is a symbolic link; give the real path",
                )
            } else {
                error
            }
        })?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is not a regular file",
        ));
    }
    if !existed {
        file.set_permissions(std::fs::Permissions::from_mode(PRIVATE_MODE))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mkb-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reads_a_small_regular_file_and_refuses_devices_directories_fifos_and_big_files() {
        let dir = dir("read");
        let small = dir.join("small.pem");
        std::fs::write(&small, "hello").unwrap();
        assert_eq!(read_regular(&small, 5).unwrap(), b"hello");
        assert!(matches!(
            read_regular(&small, 4),
            Err(ReadError::TooLarge { n_bytes: 5, .. })
        ));
        let zero = read_regular(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert_eq!(zero.to_string(), "is not a regular file but a device");
        let directory = read_regular(&dir, 1 << 20).unwrap_err();
        assert_eq!(
            directory.to_string(),
            "is not a regular file but a directory"
        );
        let fifo = dir.join("fifo");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        // No writer: a blocking open would hang here.
        let error = read_regular(&fifo, 1 << 20).unwrap_err();
        assert_eq!(error.to_string(), "is not a regular file but a FIFO");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn made_files_are_0600_whatever_the_umask_and_never_follow_a_link() {
        let dir = dir("make");
        let old = unsafe { libc::umask(0o000) };
        let created = dir.join("status.json.new");
        create_private(&created).unwrap();
        let spool = dir.join("spool.db");
        ensure_private_file(&spool).unwrap();
        unsafe { libc::umask(old) };
        for path in [&created, &spool] {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
        // Existing regular file: fine, twice.
        ensure_private_file(&spool).unwrap();

        let target = dir.join("elsewhere");
        std::fs::write(&target, "not yours").unwrap();
        let link = dir.join("link.db");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let error = ensure_private_file(&link).unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert!(create_private(&link).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "not yours");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
