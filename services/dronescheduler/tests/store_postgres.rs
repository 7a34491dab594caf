//! The drone store's conformance suite on PostgreSQL: every store opens in a fresh schema.
//!
//! Runs when `FABRIKAM_TEST_POSTGRES_URL` names a server, and is skipped (saying so) otherwise;
//! with the variable set, a server that does not answer fails every test.

use std::sync::Arc;

use async_trait::async_trait;
use dronescheduler::store::conformance::DroneStoreHarness;
use dronescheduler::{DroneStore, FleetConfig, PostgresDroneStore};
use platform::testenv;

const SUITE: &str = "drone store on PostgreSQL";

struct PostgresHarness {
    server: String,
    /// Drops the test's schemas when it ends.
    cleanup: testenv::Cleanup,
}

#[async_trait]
impl DroneStoreHarness for PostgresHarness {
    async fn open_shared(&self, count: usize) -> Vec<Arc<dyn DroneStore>> {
        let url = self.cleanup.fresh_postgres_schema(&self.server).await;
        let mut stores: Vec<Arc<dyn DroneStore>> = Vec::with_capacity(count);
        for _ in 0..count {
            stores.push(Arc::new(PostgresDroneStore::open(&url).await.expect("open PostgreSQL store")));
        }
        stores
    }
}

// The block is expanded inside each test, so `require_server!` returns from (skips) the test.
dronescheduler::dronescheduler_store_conformance_tests!({
    let server = platform::require_server!(testenv::POSTGRES_URL, SUITE);
    PostgresHarness { server, cleanup: testenv::Cleanup::new() }
});

#[tokio::test]
async fn open_store_takes_postgres_urls_and_seeds_once() {
    let server = platform::require_server!(testenv::POSTGRES_URL, SUITE);
    let cleanup = testenv::Cleanup::new();
    let url = cleanup.fresh_postgres_schema(&server).await;
    let fleet = FleetConfig { size: 7, ..FleetConfig::default() };
    let store = dronescheduler::open_store(&url, &fleet).await.expect("open through open_store");
    assert_eq!(store.drones().await.expect("drones").len(), 7);
    let postgresql = url.replacen("postgres://", "postgresql://", 1);
    let bigger = FleetConfig { size: 9, ..FleetConfig::default() };
    let again = dronescheduler::open_store(&postgresql, &bigger).await.expect("postgresql:// is accepted too");
    assert_eq!(again.drones().await.expect("drones").len(), 7, "a restart keeps the stored fleet");
}

#[tokio::test]
async fn an_assignment_takes_a_drone_no_other_transaction_holds_instead_of_waiting() {
    use dronescheduler::domain::{self, AssignmentRequest, Depot};
    use dronescheduler::store::Assigned;
    use platform::geo::Point;
    use sqlx::Connection;

    let server = platform::require_server!(testenv::POSTGRES_URL, SUITE);
    let cleanup = testenv::Cleanup::new();
    let url = cleanup.fresh_postgres_schema(&server).await;
    let fleet = FleetConfig { size: 3, depots: vec![Depot::new("hub", "Hub", 47.5, -122.3)], ..FleetConfig::default() };
    let store = PostgresDroneStore::open(&url).await.expect("open PostgreSQL store");
    store.seed(&fleet.depots, &domain::initial_fleet(&fleet)).await.expect("seed");
    // Another scheduler process in the middle of claiming the depot's first free drone.
    let mut other = sqlx::PgConnection::connect(&url).await.expect("connect");
    let mut holding = other.begin().await.expect("begin");
    let held: String = sqlx::query_scalar("SELECT id FROM drones ORDER BY id LIMIT 1 FOR UPDATE")
        .fetch_one(&mut *holding)
        .await
        .expect("lock the first drone");
    let request = AssignmentRequest {
        delivery_id: "d1".into(),
        owner_id: "contoso".into(),
        account_id: None,
        pickup: Point::new(47.6062, -122.3321),
        dropoff: Point::new(47.62, -122.35),
        weight: 1.0,
        expedited: false,
        traceparent: None,
    };
    let outcome =
        tokio::time::timeout(std::time::Duration::from_secs(5), store.assign(&request, chrono::Utc::now(), &fleet))
            .await
            .expect("the assignment waited for the drone another transaction holds")
            .expect("assign");
    let Assigned::Drone(assignment) = outcome else { panic!("no drone: {outcome:?}") };
    assert_ne!(assignment.drone_id, held, "the held drone was given while held");
    assert_eq!(assignment.drone_id, "drone-0002", "the next free drone by id");
    holding.rollback().await.expect("rollback");
}
