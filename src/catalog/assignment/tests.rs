use super::*;
use crate::catalog::Topic;

fn broker(id: BrokerId, filter: &str) -> Broker {
    let topic = Topic {
        filter: filter.to_owned(),
        qos: 1,
        device_id_level: None,
    };
    Broker::plain(id, "127.0.0.1", 1883, vec![topic])
}

fn rows(pairs: &[(BrokerId, &str)]) -> Vec<AssignmentRow> {
    pairs
        .iter()
        .map(|(mqtt_id, gateway_id)| AssignmentRow {
            mqtt_id: *mqtt_id,
            gateway_id: (*gateway_id).to_owned(),
        })
        .collect()
}

/// Brokers 1..=3 subscribed to `a/#`, broker 4 to `$share/g/a/#`.
fn catalog() -> Catalog {
    Catalog {
        brokers: vec![
            broker(1, "a/#"),
            broker(2, "a/#"),
            broker(3, "a/#"),
            broker(4, "$share/g/a/#"),
        ],
    }
}

/// `rows` split for `gateway`: (ids run, assigned here, duplicated ids).
fn check(
    pairs: &[(BrokerId, &str)],
    gateway: &str,
    expected: (&[BrokerId], &[BrokerId], &[BrokerId]),
) {
    let (catalog, assignment) = assign(catalog(), &rows(pairs), gateway);
    let running: Vec<BrokerId> = catalog.brokers.iter().map(|b| b.id).collect();
    let duplicated: Vec<BrokerId> = assignment.duplicated.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        (
            running.as_slice(),
            assignment.assigned_here.as_slice(),
            duplicated.as_slice()
        ),
        expected,
        "{pairs:?} on {gateway}"
    );
    assert_eq!(assignment.n_brokers_total, 4);
    assert_eq!(assignment.n_running(), running.len());
}

#[test]
fn no_rows_run_everything_everywhere() {
    check(&[], "gw-a", (&[1, 2, 3, 4], &[], &[]));
}

#[test]
fn assigned_brokers_run_only_on_their_gateways() {
    let pairs = [(1, "gw-a"), (2, "gw-b")];
    check(&pairs, "gw-a", (&[1, 3, 4], &[1], &[]));
    check(&pairs, "gw-b", (&[2, 3, 4], &[2], &[]));
    check(&pairs, "gw-c", (&[3, 4], &[], &[]));
}

#[test]
fn gateway_ids_match_exactly() {
    check(&[(1, "GW-A")], "gw-a", (&[2, 3, 4], &[], &[]));
    check(&[(1, "gw-a ")], "gw-a", (&[2, 3, 4], &[], &[]));
}

#[test]
fn rows_of_brokers_not_in_the_catalog_are_ignored() {
    check(
        &[(9, "gw-a"), (1, "gw-a")],
        "gw-a",
        (&[1, 2, 3, 4], &[1], &[]),
    );
}

#[test]
fn a_broker_shared_without_shared_subscriptions_is_named() {
    let pairs = [(1, "gw-a"), (1, "gw-b"), (4, "gw-a"), (4, "gw-b")];
    check(&pairs, "gw-a", (&[1, 2, 3, 4], &[1, 4], &[1]));
    // Not this gateway's concern when it does not run it.
    check(&pairs, "gw-c", (&[2, 3], &[], &[]));
    let (_, assignment) = assign(catalog(), &rows(&pairs), "gw-b");
    assert_eq!(
        assignment.duplicated,
        vec![(1, vec!["gw-a".to_owned(), "gw-b".to_owned()])]
    );
}

#[test]
fn a_duplicate_row_is_one_gateway() {
    check(
        &[(1, "gw-a"), (1, "gw-a")],
        "gw-a",
        (&[1, 2, 3, 4], &[1], &[]),
    );
}

#[test]
fn describe_names_both_lists() {
    let (_, assignment) = assign(catalog(), &rows(&[(1, "gw-a"), (2, "gw-b")]), "gw-a");
    assert_eq!(
        assignment.describe("gw-a"),
        "gateway gw-a runs 3 of 4 brokers: assigned here 1; unassigned (every gateway) 3, 4"
    );
}
