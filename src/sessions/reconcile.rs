//! Pure: compares the running sessions with the desired catalog and lists the changes.
//!
//! No IO and no session handles here: the supervisor applies the plan. A change
//! of host, port or credentials restarts a session; a change of the topic list
//! alone is applied on the live connection (subscribe / unsubscribe), so the
//! broker never sees a reconnect for it.

use std::collections::BTreeMap;

use crate::catalog::{Broker, BrokerId, Catalog, Topic};

/// One step that brings the running sessions closer to the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A broker that has no session yet.
    Start(Broker),
    /// A broker that left the catalog.
    Stop(BrokerId),
    /// Connection settings (host, port, credentials) differ: reconnect as the new broker.
    Restart(Broker),
    /// Only the topic list differs: change subscriptions on the live
    /// connection. Both lists are empty when only a `device_id_level` changed.
    UpdateTopics {
        id: BrokerId,
        /// New filters, and filters whose QoS changed (subscribing again replaces the QoS).
        subscribe: Vec<Topic>,
        /// Filters no longer wanted.
        unsubscribe: Vec<String>,
    },
}

/// The changes that turn `running` into `desired`, in broker id order.
pub fn reconcile(running: &BTreeMap<BrokerId, Broker>, desired: &Catalog) -> Vec<Change> {
    // The catalog promises sorted unique ids; a map keeps this correct even if it didn't.
    let desired: BTreeMap<BrokerId, &Broker> = desired
        .brokers
        .iter()
        .map(|broker| (broker.id, broker))
        .collect();
    let mut ids: Vec<BrokerId> = running.keys().chain(desired.keys()).copied().collect();
    ids.sort_unstable();
    ids.dedup();

    let mut changes = Vec::new();
    for id in ids {
        match (running.get(&id), desired.get(&id)) {
            (None, Some(wanted)) => changes.push(Change::Start((*wanted).clone())),
            (Some(_), None) => changes.push(Change::Stop(id)),
            (Some(current), Some(wanted)) if current.connection_differs(wanted) => {
                changes.push(Change::Restart((*wanted).clone()))
            }
            (Some(current), Some(wanted)) => {
                if let Some(change) = topic_change(id, &current.topics, &wanted.topics) {
                    changes.push(change);
                }
            }
            (None, None) => {}
        }
    }
    changes
}

/// `None` when both lists subscribe to the same filters with the same QoS
/// and device id levels.
fn topic_change(id: BrokerId, current: &[Topic], wanted: &[Topic]) -> Option<Change> {
    let current_qos: BTreeMap<&str, u8> = current
        .iter()
        .map(|topic| (topic.filter.as_str(), topic.qos))
        .collect();
    let wanted_qos: BTreeMap<&str, u8> = wanted
        .iter()
        .map(|topic| (topic.filter.as_str(), topic.qos))
        .collect();
    let subscribe: Vec<Topic> = wanted
        .iter()
        .filter(|topic| current_qos.get(topic.filter.as_str()) != Some(&topic.qos))
        .cloned()
        .collect();
    let unsubscribe: Vec<String> = current_qos
        .keys()
        .filter(|filter| !wanted_qos.contains_key(*filter))
        .map(|filter| (*filter).to_owned())
        .collect();
    if subscribe.is_empty() && unsubscribe.is_empty() && current == wanted {
        None
    } else {
        Some(Change::UpdateTopics {
            id,
            subscribe,
            unsubscribe,
        })
    }
}

#[cfg(test)]
mod tests;
