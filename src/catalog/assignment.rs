//! Pure: which of the catalog's brokers this gateway runs, from the rows of
//! the optional table `iot_data.mqtt_broker_gateway (mqtt_id, gateway_id)`.
//!
//! A broker with no row there runs on every gateway (the table missing means
//! the same for every broker); a broker with rows runs only on the gateways
//! they name. Nothing here does IO or logs: the catalog thread says what
//! changed, `check` prints it.

use std::collections::{BTreeMap, BTreeSet};

use super::{Broker, BrokerId, Catalog};

/// One `iot_data.mqtt_broker_gateway` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssignmentRow {
    pub mqtt_id: BrokerId,
    /// Compared with the config's `gateway_id` exactly.
    pub gateway_id: String,
}

/// How the catalog was split, for the log and `check`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Valid active brokers in the whole catalog, before the split.
    pub n_brokers_total: usize,
    /// Brokers whose rows name this gateway, sorted.
    pub assigned_here: Vec<BrokerId>,
    /// Brokers without rows, which every gateway runs, sorted.
    pub unassigned: Vec<BrokerId>,
    /// Brokers this gateway runs that rows give to several gateways, while
    /// their subscriptions are not shared (`use_shared_subscriptions`): every
    /// message reaches Kinesis once per gateway. With the gateways, sorted.
    pub duplicated: Vec<(BrokerId, Vec<String>)>,
}

impl Assignment {
    /// The brokers this gateway runs.
    pub fn n_running(&self) -> usize {
        self.assigned_here.len() + self.unassigned.len()
    }

    /// `gateway gw-1 runs 2 of 3 brokers: assigned here 1; unassigned (every gateway) 3`.
    pub fn describe(&self, gateway_id: &str) -> String {
        format!(
            "gateway {gateway_id} runs {} of {} brokers: assigned here {}; unassigned (every gateway) {}",
            self.n_running(),
            self.n_brokers_total,
            list(&self.assigned_here),
            list(&self.unassigned),
        )
    }
}

/// `1, 7` or `none`.
fn list(ids: &[BrokerId]) -> String {
    if ids.is_empty() {
        return "none".to_owned();
    }
    ids.iter()
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Keeps the brokers of `catalog` that `gateway_id` runs. Rows naming a
/// broker the catalog does not hold (inactive, unknown, skipped) are ignored.
pub fn assign(catalog: Catalog, rows: &[AssignmentRow], gateway_id: &str) -> (Catalog, Assignment) {
    let mut gateways: BTreeMap<BrokerId, BTreeSet<&str>> = BTreeMap::new();
    for row in rows {
        gateways
            .entry(row.mqtt_id)
            .or_default()
            .insert(&row.gateway_id);
    }
    let mut assignment = Assignment {
        n_brokers_total: catalog.brokers.len(),
        ..Assignment::default()
    };
    let mut brokers = Vec::with_capacity(catalog.brokers.len());
    for broker in catalog.brokers {
        match gateways.get(&broker.id) {
            None => assignment.unassigned.push(broker.id),
            Some(names) if names.contains(gateway_id) => {
                assignment.assigned_here.push(broker.id);
                if names.len() > 1 && !subscribes_shared(&broker) {
                    let names = names.iter().map(|name| (*name).to_owned()).collect();
                    assignment.duplicated.push((broker.id, names));
                }
            }
            Some(_) => continue,
        }
        brokers.push(broker);
    }
    (Catalog { brokers }, assignment)
}

/// Every subscription is an MQTT 5 / Mosquitto shared one (`$share/group/filter`),
/// so gateways subscribed in one group split the messages instead of each
/// getting them all.
fn subscribes_shared(broker: &Broker) -> bool {
    broker
        .topics
        .iter()
        .all(|topic| topic.filter.starts_with("$share/"))
}

#[cfg(test)]
mod tests;
