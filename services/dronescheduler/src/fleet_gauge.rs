//! The `drones` gauge: how many drones are idle and how many busy, refreshed on a timer from
//! the store (so it is right whichever process assigned or released them).

use std::sync::Arc;
use std::time::Duration;

use platform::clock::SharedClock;
use tokio_util::sync::CancellationToken;

use crate::store::DroneStore;

/// How often the gauge is refreshed.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// Sets the gauge every `every` until `shutdown`. A failed read keeps the last values: the
/// store's own readiness probe reports the outage.
pub async fn run(store: Arc<dyn DroneStore>, clock: SharedClock, every: Duration, shutdown: CancellationToken) {
    platform::metrics::handle();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        // Counted by the store: reading every drone would cost a large fleet dearly every tick.
        if let Ok((total, busy)) = store.fleet_counts(clock.now()).await {
            let idle = total.saturating_sub(busy);
            metrics::gauge!("drones", "service" => crate::SERVICE, "state" => "idle").set(idle as f64);
            metrics::gauge!("drones", "service" => crate::SERVICE, "state" => "busy").set(busy as f64);
        }
    }
}
