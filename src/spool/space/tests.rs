use super::*;

const MIB: u64 = 1 << 20;

fn room(fs_free_mib: u64, spool_free_mib: u64) -> Room {
    Room {
        fs_free: fs_free_mib * MIB,
        spool_free: spool_free_mib * MIB,
    }
}

/// `check(room, paused) == allowed`, with a floor of 8 MiB (margin 2 MiB) and the reserve in place.
fn check(room: Room, paused: bool, allowed: bool) {
    assert_eq!(
        appends_allowed(room, 8 * MIB, paused, true),
        allowed,
        "room {room:?}, paused {paused}"
    );
}

#[test]
fn appends_stop_below_the_floor_counting_the_spool_files_free_pages() {
    check(room(9, 0), false, true);
    check(room(8, 0), false, true);
    check(room(7, 0), false, false);
    // Free pages in the spool file are room: new rows reuse them.
    check(room(1, 7), false, true);
    // But the WAL needs some room on the filesystem itself (half the margin).
    check(room(0, 20), false, false);
}

#[test]
fn paused_appends_resume_only_above_the_floor_plus_a_margin() {
    check(room(8, 0), true, false);
    check(room(9, 0), true, false);
    check(room(10, 0), true, true);
    check(room(2, 8), true, true);
    // Plenty of free pages, but the WAL needs the margin on the filesystem itself.
    check(room(1, 20), true, false);
    check(
        Room {
            fs_free: 2 * MIB - 1,
            spool_free: 20 * MIB,
        },
        true,
        false,
    );
}

#[test]
fn without_the_reserve_appends_leave_its_room_too() {
    let floor = 8 * MIB;
    assert!(!appends_allowed(room(11, 0), floor, false, false));
    assert!(appends_allowed(room(12, 0), floor, false, false));
    // The spool file's free pages stand in for it: the reserve was used up by
    // the spool's own growth, and its file does not shrink.
    assert!(appends_allowed(room(2, 10), floor, false, false));
    assert!(!appends_allowed(room(13, 0), floor, true, false));
    assert!(appends_allowed(room(14, 0), floor, true, false));
}

#[test]
fn a_group_takes_a_third_of_what_lies_above_the_floor_and_of_the_free_filesystem() {
    let floor = 8 * MIB;
    assert_eq!(group_budget(room(20, 0), floor, true), 4 * MIB);
    assert_eq!(group_budget(room(11, 0), floor, true), MIB);
    assert_eq!(group_budget(room(7, 0), floor, true), 0);
    // Free pages count, but a group passes through the WAL on the filesystem first.
    assert_eq!(group_budget(room(3, 100), floor, true), MIB);
    assert_eq!(group_budget(room(15, 0), floor, false), MIB);
}

#[test]
fn the_resume_margin_is_a_quarter_of_the_floor_within_bounds() {
    assert_eq!(resume_margin(8 * MIB), 2 * MIB);
    assert_eq!(resume_margin(MIB), 256 << 10);
    assert_eq!(resume_margin(1 << 30), 16 * MIB);
}

#[test]
fn the_reserve_is_made_again_only_when_it_leaves_the_floor_free() {
    assert!(!may_make_reserve(0, 8 * MIB));
    assert!(!may_make_reserve(12 * MIB - 1, 8 * MIB));
    assert!(may_make_reserve(12 * MIB, 8 * MIB));
}

#[test]
fn capacity_is_the_free_room_and_the_spool_less_the_floor_and_the_reserve() {
    // A 16 MiB filesystem with 15 MiB free, a 1 MiB spool, floor 2 MiB, no reserve yet.
    assert_eq!(capacity(15 * MIB, MIB, 2 * MIB, false), 10 * MIB);
    assert_eq!(capacity(11 * MIB, MIB, 2 * MIB, true), 10 * MIB);
    assert_eq!(capacity(MIB, 0, 2 * MIB, true), 0, "never below zero");
}

#[test]
fn the_reserve_sits_beside_the_spool() {
    assert_eq!(
        reserve_path(Path::new("/var/lib/mkb/spool.db")),
        PathBuf::from("/var/lib/mkb/spool.db.reserve")
    );
}

/// Before an append, a measurement that found plenty of room is trusted for
/// a second and for what was committed since; past either, the writer
/// measures again (statvfs and the free-list).
#[test]
fn a_recent_measurement_of_plenty_is_trusted_before_appends() {
    let dir = std::env::temp_dir().join(format!("mkb-space-trust-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("spool.db");
    let connection = Connection::open(&path).unwrap();
    let status = std::sync::Arc::new(SpaceStatus::default());
    let mut space = Space::open(&path, Some(MIB), 16 * MIB, &connection, status);
    let plenty = space.floor + PLENTY_ABOVE_FLOOR + 10 * MIB;
    if space.room.fs_free > plenty {
        let measured_at = space.checked_at;
        assert!(space.recheck(&connection, MIB));
        assert_eq!(space.checked_at, measured_at, "trusted: not measured again");
        assert_eq!(space.added_since, MIB);
        // What was committed since eats into the room: near the floor it measures.
        let eaten = space.room.fs_free - space.floor;
        assert!(space.recheck(&connection, eaten));
        assert!(space.checked_at > measured_at, "measured again");
        assert_eq!(space.added_since, eaten);
    }
    // A measurement older than a second is measured again, whatever it found.
    space.checked_at -= TRUSTED_FOR + Duration::from_millis(1);
    let stale = space.checked_at;
    assert!(space.recheck(&connection, 1));
    assert!(space.checked_at > stale);
    drop(connection);
    let _ = std::fs::remove_dir_all(&dir);
}
