//! One MQTT session per broker (placeholder; see issue 3).

use std::sync::Arc;

use crate::catalog::Catalog;
use crate::config::MqttConfig;
use crate::shutdown::Shutdown;
use crate::spool::Appender;

/// Keeps one session per broker in the latest catalog until shutdown, then
/// disconnects every session and returns once none is left.
pub async fn run(
    executor: Arc<smol::Executor<'static>>,
    catalogs: async_channel::Receiver<Catalog>,
    appender: Appender,
    config: MqttConfig,
    gateway_id: String,
    shutdown: Shutdown,
) {
    let _ = (executor, catalogs, appender, config, gateway_id);
    shutdown.wait().await;
}
