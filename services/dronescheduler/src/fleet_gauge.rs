//! The `drones` gauge: how many drones are idle and how many busy, refreshed on a timer from
//! the store (so it is right whichever process assigned or released them).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use platform::clock::SharedClock;
use tokio_util::sync::CancellationToken;

use crate::domain::DroneRecord;
use crate::store::DroneStore;

/// How often the gauge is refreshed.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// Idle and busy drones at `now`: busy while its latest flight has not ended.
pub fn idle_and_busy(drones: &[DroneRecord], now: DateTime<Utc>) -> (usize, usize) {
    let busy = drones.iter().filter(|d| d.busy_until > now).count();
    (drones.len() - busy, busy)
}

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
        if let Ok(drones) = store.drones().await {
            let (idle, busy) = idle_and_busy(&drones, clock.now());
            metrics::gauge!("drones", "service" => crate::SERVICE, "state" => "idle").set(idle as f64);
            metrics::gauge!("drones", "service" => crate::SERVICE, "state" => "busy").set(busy as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::domain::{FleetConfig, initial_fleet};

    #[test]
    fn busy_until_its_flight_ends() {
        let noon = Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap();
        let mut fleet = initial_fleet(&FleetConfig::default());
        assert!(fleet.len() >= 3);
        for drone in &mut fleet {
            drone.busy_until = noon;
        }
        fleet[0].busy_until = noon + chrono::Duration::minutes(10);
        fleet[1].busy_until = noon + chrono::Duration::seconds(1);
        assert_eq!(idle_and_busy(&fleet, noon), (fleet.len() - 2, 2));
        assert_eq!(idle_and_busy(&fleet, noon + chrono::Duration::seconds(1)), (fleet.len() - 1, 1));
        assert_eq!(idle_and_busy(&[], noon), (0, 0));
    }
}
