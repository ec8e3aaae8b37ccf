//! Limits of the box the gateway raises for itself at start.
//!
//! Every broker connection holds a descriptor, and systemd's and most
//! shells' default soft limit is 1,024: past about 1,000 brokers connections
//! would fail with "too many open files". The soft limit may be raised up to
//! the hard one without privileges, as the Go runtime does for every program.

// rlim_t is 64 bits here but 32 on armv7: the casts are not all no-ops.
#![allow(clippy::unnecessary_cast)]

use std::io;

/// The open-files limit: (soft, hard).
pub fn open_files() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur as u64, limit.rlim_max as u64))
}

/// Raises the soft open-files limit to the hard one (capped at 1,048,576,
/// a hard limit of "unlimited" is not a number the kernel takes).
/// Returns (before, after).
pub fn raise_open_files() -> io::Result<(u64, u64)> {
    const CAP: u64 = 1 << 20;
    let (soft, hard) = open_files()?;
    let wanted = hard.min(CAP);
    if soft >= wanted {
        return Ok((soft, soft));
    }
    let limit = libc::rlimit {
        rlim_cur: wanted as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit reads the struct it is given; raising the soft limit
    // up to the hard one needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((soft, wanted))
}

/// How many malloc arenas glibc may keep (see [`cap_malloc_arenas`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_ARENAS: i32 = 2;

/// Caps glibc's malloc at [`MALLOC_ARENAS`] arenas instead of up to eight per
/// core: every thread that allocates would otherwise get an arena of its own,
/// each keeping the pages it freed (0.5 MiB of the idle gateway's resident
/// memory). The threads allocate little and rarely at the same moment, and
/// glibc's per-thread cache serves most allocations without the arena's lock.
/// A `MALLOC_ARENA_MAX` in the environment is left to rule. Call it before
/// threads start. True when the cap is in effect (or nothing was asked).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn cap_malloc_arenas() -> bool {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return true;
    }
    // SAFETY: mallopt sets one of malloc's tunables; it touches no memory of ours.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) == 1 }
}

/// musl's malloc has no arenas to cap.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn cap_malloc_arenas() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malloc_takes_the_arena_cap() {
        assert!(cap_malloc_arenas());
    }
}
