use super::partition_key;
use crate::config::PartitionKeyScheme::{self, Broker, BrokerDevice, BrokerTopic, Device, Topic};

fn check(scheme: PartitionKeyScheme, broker_id: i64, topic: &str, expected: &str) {
    assert_eq!(
        partition_key(scheme, broker_id, topic, None).as_str(),
        expected
    );
}

#[test]
fn schemes() {
    check(Topic, 7, "plant/a/temp", "plant/a/temp");
    check(Broker, 7, "plant/a/temp", "7");
    check(BrokerTopic, 7, "plant/a/temp", "7/plant/a/temp");
}

#[test]
fn never_empty() {
    check(Topic, 7, "", "7");
    check(BrokerTopic, 7, "", "7/");
}

#[test]
fn long_topics_are_cut_to_256_bytes() {
    let topic = "t".repeat(300);
    check(Topic, 7, &topic, &topic[..256]);
    check(BrokerTopic, 7, &topic, &format!("7/{}", &topic[..254]));
}

#[test]
fn cut_never_splits_a_character() {
    // 255 ASCII bytes then a 2-byte 'é': 257 bytes, the 'é' cannot fit.
    let topic = format!("{}é", "a".repeat(255));
    check(Topic, 7, &topic, &"a".repeat(255));
    // 3-byte '€' straddling the boundary at every offset.
    for n_ascii in 253..=256 {
        let topic = format!("{}€€", "a".repeat(n_ascii));
        let key = partition_key(Topic, 7, &topic, None);
        assert!(
            key.len() <= 256 && topic.starts_with(key.as_str()),
            "{n_ascii}"
        );
        assert!(key.len() > 253);
    }
    // Exactly 256 bytes of multi-byte characters are kept whole.
    let topic = "€".repeat(85) + "a"; // 255 + 1 bytes
    check(Topic, 7, &topic, &topic);
}

#[test]
fn device_schemes_use_the_device_id_or_fall_back_to_the_topic() {
    let key = |scheme, device: Option<&str>| {
        partition_key(scheme, 7, "plant/dev-1/temp", device)
            .as_str()
            .to_owned()
    };
    assert_eq!(key(Device, Some("dev-1")), "dev-1");
    assert_eq!(key(BrokerDevice, Some("dev-1")), "7/dev-1");
    assert_eq!(key(Device, None), "plant/dev-1/temp");
    assert_eq!(key(BrokerDevice, None), "7/plant/dev-1/temp");
    // The topic schemes ignore the device id.
    assert_eq!(key(Topic, Some("dev-1")), "plant/dev-1/temp");
    assert_eq!(key(BrokerTopic, Some("dev-1")), "7/plant/dev-1/temp");
    // The longest device id with the widest broker id still fits.
    let longest = "d".repeat(crate::ids::MAX_DEVICE_ID_BYTES);
    let wide = partition_key(BrokerDevice, i64::MIN, "t", Some(&longest));
    assert_eq!(wide.as_str(), format!("{}/{longest}", i64::MIN));
}
