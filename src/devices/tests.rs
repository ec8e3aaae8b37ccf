use super::*;

fn id(text: &str) -> Extracted {
    Extracted::Device(DeviceId::try_from(text).unwrap())
}

#[test]
fn device_id_is_the_level_counted_from_one() {
    assert_eq!(device_id_at("plant/dev-7/temp", 2), id("dev-7"));
    assert_eq!(device_id_at("plant/dev-7/temp", 1), id("plant"));
    assert_eq!(device_id_at("plant/dev-7/temp", 3), id("temp"));
    assert_eq!(device_id_at("plant/dev-7/temp", 4), Extracted::Absent);
    assert_eq!(device_id_at("plant//temp", 2), Extracted::Absent);
    assert_eq!(device_id_at("/dev/temp", 1), Extracted::Absent);
    assert_eq!(device_id_at("a/b", 0), Extracted::Absent);
    assert_eq!(device_id_at("a/b\0c", 2), Extracted::Absent);
}

#[test]
fn device_ids_are_bounded() {
    let longest = "d".repeat(MAX_DEVICE_ID_BYTES);
    assert_eq!(device_id_at(&format!("p/{longest}"), 2), id(&longest));
    let too_long = format!("p/{longest}x/t");
    assert_eq!(device_id_at(&too_long, 2), Extracted::TooLong);
}

#[test]
fn filters_match_as_mqtt_says() {
    let check = |filter: &str, topic: &str, expected: bool| {
        assert_eq!(filter_matches(filter, topic), expected, "{filter} {topic}");
    };
    check("plant/+/temp", "plant/d1/temp", true);
    check("plant/+/temp", "plant/d1/hum", false);
    check("plant/+/temp", "plant/d1/temp/x", false);
    check("plant/#", "plant", true);
    check("plant/#", "plant/a/b", true);
    check("#", "anything/at/all", true);
    check("#", "$SYS/x", false);
    check("+/x", "$SYS/x", false);
    check("$SYS/x", "$SYS/x", true);
    check("$share/g/plant/+", "plant/d1", true);
    check("$share/g/plant/+", "other/d1", false);
    check("a/b", "a/b", true);
    check("a/b", "a", false);
    check("a/+", "a/", true);
}

#[test]
fn counts_per_device_and_deltas_since_the_last_take() {
    let devices = Devices::new(100);
    for at in [10, 30, 20] {
        devices.seen(1, "d1", at);
    }
    devices.seen(2, "d1", 5);
    let mut deltas = devices.take_deltas();
    deltas.sort_by_key(|d| d.broker_id);
    assert_eq!(
        deltas,
        vec![
            DeviceDelta {
                broker_id: 1,
                device_id: "d1".into(),
                first_seen_ms: 10,
                last_seen_ms: 30,
                messages: 3
            },
            DeviceDelta {
                broker_id: 2,
                device_id: "d1".into(),
                first_seen_ms: 5,
                last_seen_ms: 5,
                messages: 1
            },
        ]
    );
    assert!(devices.take_deltas().is_empty(), "nothing new");
    devices.seen(1, "d1", 40);
    let deltas = devices.take_deltas();
    assert_eq!(deltas.len(), 1);
    assert_eq!((deltas[0].messages, deltas[0].last_seen_ms), (1, 40));
}

#[test]
fn a_failed_write_is_sent_again_with_what_came_since() {
    let devices = Devices::new(100);
    devices.seen(1, "d1", 10);
    devices.seen(1, "d1", 11);
    let failed = devices.take_deltas();
    devices.seen(1, "d1", 12);
    devices.restore(&failed);
    let deltas = devices.take_deltas();
    assert_eq!(deltas.len(), 1);
    assert_eq!((deltas[0].messages, deltas[0].last_seen_ms), (3, 12));
}

#[test]
fn the_bound_holds_and_the_rest_is_counted() {
    let devices = Devices::new(10);
    for device in 0..50 {
        for at in 0..20 {
            devices.seen(1, &format!("d{device}"), at);
        }
    }
    let counts = devices.counts();
    assert_eq!(counts.n_tracked, 10);
    assert_eq!(counts.n_untracked_messages, 40 * 20);
    let deltas = devices.take_deltas();
    assert_eq!(deltas.len(), 10);
    assert!(deltas.iter().all(|d| d.messages == 20));
    let none = Devices::new(0);
    none.seen(1, "d", 1);
    assert_eq!(none.counts().n_untracked_messages, 1);
    assert!(none.take_deltas().is_empty());
}
