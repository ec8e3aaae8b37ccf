//! A small filesystem of a test's own (tmpfs), for filling it up; unmounted on drop.
//!
//! Mounting needs root (these tests run as root on this machine kind); where it
//! is not permitted, [`Tmpfs::mount`] says why and the test skips itself.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::TempDir;

pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// A tmpfs of `size_mib` MiB at `dir/fs`; `None`, after printing why,
    /// where mounting is not permitted. Declare `dir` before the result, so
    /// the filesystem is unmounted before the directory is removed.
    pub fn mount(dir: &TempDir, size_mib: u64) -> Option<Tmpfs> {
        let path = dir.join("fs");
        std::fs::create_dir_all(&path).expect("create the mount point");
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(&path)
            .output();
        match output {
            Ok(output) if output.status.success() => Some(Tmpfs { path }),
            Ok(output) => {
                eprintln!(
                    "SKIPPED: cannot mount a {size_mib} MiB tmpfs (needs root): {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                None
            }
            Err(error) => {
                eprintln!("SKIPPED: cannot run mount: {error}");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Free bytes, as the gateway sees them (statvfs).
    pub fn free_bytes(&self) -> u64 {
        mqtt_kinesis_bridge::disk::filesystem(&self.path)
            .expect("statvfs")
            .free_bytes
    }

    /// Another program filling the disk: writes `name` until not one more
    /// byte fits. Returns the bytes written.
    pub fn fill(&self, name: &str) -> u64 {
        let mut file = std::fs::File::create(self.join(name)).expect("create the filler");
        let mut written = 0u64;
        for chunk in [1 << 20, 4096, 1] {
            let block = vec![0x5a; chunk];
            while file.write_all(&block).is_ok() {
                written += chunk as u64;
            }
        }
        let _ = file.sync_all();
        written
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|status| status.success());
        if !unmounted {
            // Something still holds a file open: detach it now, freed when closed.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}
