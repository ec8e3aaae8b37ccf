//! The fuzz targets' inputs replayed on stable Rust, without libFuzzer: every
//! file of `fuzz/corpus/TARGET/` (the kept corpus) and `fuzz/regressions/TARGET/`
//! (inputs that once failed, issue 14) through the same harness
//! (`fuzz/harness.rs`, included by path) that `cargo fuzz` runs.

#[path = "../../fuzz/harness.rs"]
mod harness;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

#[test]
fn every_kept_fuzz_input_passes_its_target() {
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut failures = Vec::new();
    for (target, run) in harness::TARGETS {
        let mut n_inputs = 0;
        for kind in ["corpus", "regressions"] {
            let dir = fuzz_dir.join(kind).join(target);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut paths: Vec<_> = entries.map(|entry| entry.unwrap().path()).collect();
            paths.sort();
            for path in paths {
                let data = std::fs::read(&path).unwrap();
                n_inputs += 1;
                if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
                    failures.push(path.display().to_string());
                }
            }
        }
        assert!(n_inputs > 0, "no kept input for fuzz target {target}");
    }
    assert!(failures.is_empty(), "fuzz inputs that fail: {failures:#?}");
}
