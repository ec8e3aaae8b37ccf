use std::os::unix::fs::PermissionsExt;

use super::*;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mkb-metrics-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Issue 15: the textfile is 0644 whatever the umask, replaces a link at its
/// name instead of writing through it, and removes a link planted at the
/// temporary name instead of following it.
#[test]
fn the_textfile_is_replaced_never_written_through_a_link() {
    let dir = temp_dir("textfile");
    let path = dir.join("mkb.prom");
    let victim = dir.join("victim");
    std::fs::write(&victim, "keep me").unwrap();
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    std::os::unix::fs::symlink(&victim, textfile_temporary(&path)).unwrap();

    write_textfile(&path, "a 1\n", 0).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    let metadata = std::fs::symlink_metadata(&path).unwrap();
    assert!(metadata.file_type().is_file(), "the link was replaced");
    assert_eq!(metadata.permissions().mode() & 0o777, 0o644);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 1\n");
    assert!(!textfile_temporary(&path).exists());

    write_textfile(&path, "a 2\n", 0).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 2\n");
    // Not while it would take the spool's floor.
    assert!(write_textfile(&path, "a 3\n", u64::MAX / 2).is_err());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 2\n");
    std::fs::remove_dir_all(&dir).unwrap();
}
