use super::partition_key;
use crate::config::PartitionKeyScheme::{self, Broker, BrokerTopic, Topic};

fn check(scheme: PartitionKeyScheme, broker_id: i64, topic: &str, expected: &str) {
    assert_eq!(partition_key(scheme, broker_id, topic).as_str(), expected);
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
        let key = partition_key(Topic, 7, &topic);
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
