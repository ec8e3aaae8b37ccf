#![no_main]

// The checks live in fuzz/harness.rs, shared with the replay test (tests/it/fuzz_replay.rs).
#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::topic_filter(data));
