//! Issue 16: what device ids cost. `cargo bench --bench devices` prints
//! (a) the time per message of the sessions' device work (the subscription's
//! level, the id from the topic, the partition key, the count in `Devices`)
//! against the same message on a topic row without a level, and (b) the heap
//! per tracked device with 100,000 devices, as malloc hands it out (usable
//! size plus its 8-byte chunk header), by a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use mqtt_kinesis_bridge::catalog::Topic;
use mqtt_kinesis_bridge::config::PartitionKeyScheme;
use mqtt_kinesis_bridge::devices::{self, Devices, Extracted};
use mqtt_kinesis_bridge::sessions::partition_key;

struct Counting;

static HEAP: AtomicIsize = AtomicIsize::new(0);

extern "C" {
    fn malloc_usable_size(ptr: *mut u8) -> usize;
}

/// What one allocation takes from glibc's heap: its usable size and the chunk header.
unsafe fn footprint(ptr: *mut u8) -> isize {
    (malloc_usable_size(ptr) + 8) as isize
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            HEAP.fetch_add(footprint(ptr), Ordering::Relaxed);
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP.fetch_sub(footprint(ptr), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const N_DEVICES: usize = 100_000;
const N_MESSAGES: usize = 5_000_000;

/// The sessions' per-message device work (`sessions/session.rs::device_id`, `deliver`).
fn on_message(topics: &[Topic], devices: &Devices, topic: &str, at_ms: i64) -> usize {
    let level = topics
        .iter()
        .filter_map(|t| Some((t.filter.as_str(), t.device_id_level?)))
        .find(|(filter, _)| devices::filter_matches(filter, topic))
        .map(|(_, level)| level);
    let device_id = match level.map(|level| devices::device_id_at(topic, level)) {
        Some(Extracted::Device(id)) => Some(id),
        _ => None,
    };
    let key = partition_key(PartitionKeyScheme::Device, 7, topic, device_id.as_deref());
    if let Some(device_id) = &device_id {
        devices.seen(7, device_id, at_ms);
    }
    key.len()
}

fn topics(level: Option<u8>) -> Vec<Topic> {
    ["alarms/#", "plant/+/temp", "status/+"]
        .iter()
        .map(|filter| Topic {
            filter: (*filter).to_owned(),
            qos: 1,
            device_id_level: level.filter(|_| *filter == "plant/+/temp"),
        })
        .collect()
}

fn ns_per_message(topics: &[Topic], devices: &Devices, names: &[String]) -> f64 {
    let started = Instant::now();
    let mut sum = 0;
    for n in 0..N_MESSAGES {
        sum += on_message(topics, devices, &names[n % names.len()], n as i64);
    }
    std::hint::black_box(sum);
    started.elapsed().as_nanos() as f64 / N_MESSAGES as f64
}

fn main() {
    let names: Vec<String> = (0..N_DEVICES)
        .map(|n| format!("plant/dev-{n:06}/temp"))
        .collect();

    let heap_before = HEAP.load(Ordering::Relaxed);
    let devices = Devices::new(N_DEVICES);
    for (n, name) in names.iter().enumerate() {
        on_message(&topics(Some(2)), &devices, name, n as i64);
    }
    let heap = HEAP.load(Ordering::Relaxed) - heap_before;
    assert_eq!(devices.counts().n_tracked, N_DEVICES as u64);
    println!(
        "memory: {N_DEVICES} tracked devices (ids of 10 bytes): {heap} bytes of heap, {:.1} bytes per device",
        heap as f64 / N_DEVICES as f64
    );

    let with_level = topics(Some(2));
    let without_level = topics(None);
    for round in 1..=3 {
        let base = ns_per_message(&without_level, &devices, &names);
        let tracked = ns_per_message(&with_level, &devices, &names);
        println!(
            "round {round}: {N_MESSAGES} messages over {N_DEVICES} devices: {base:.0} ns/msg without a level (key = topic), {tracked:.0} ns/msg with device_id_level (id, key = device, counted): {:.0} ns/msg for devices",
            tracked - base
        );
    }
    let deltas = devices.take_deltas();
    println!("take_deltas for the upload: {} rows", deltas.len());
}
