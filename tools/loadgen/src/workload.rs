//! The requests a run sends: reference-shaped delivery requests with varied owners, packages
//! and places, and a share of reschedules and cancels of deliveries accepted earlier.

use std::collections::VecDeque;
use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Places named like a customer would; the system geocodes names inside its service area.
const PLACES: &[&str] = &[
    "Pike Place Market",
    "Space Needle",
    "University of Washington",
    "Seattle Center",
    "Capitol Hill",
    "Fremont Troll",
    "Ballard Locks",
    "Columbia City",
    "Georgetown",
    "Bellevue Square",
    "Kirkland Marina",
    "Redmond Town Center",
];

/// One request to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    Create(Value),
    Reschedule { delivery_id: String, body: Value },
    Cancel { delivery_id: String },
}

/// Mix settings.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    /// Share of operations that reschedule an accepted delivery (0..1).
    pub reschedule: f64,
    /// Share of operations that cancel an accepted delivery (0..1).
    pub cancel: f64,
    pub owners: u32,
}

/// Draws operations; remembers recent accepted ids for reschedules and cancels.
pub struct Workload {
    mix: Mix,
    rng: Mutex<StdRng>,
    accepted: Mutex<VecDeque<String>>,
}

impl Workload {
    pub fn new(mix: Mix, seed: u64) -> Self {
        Self { mix, rng: Mutex::new(StdRng::seed_from_u64(seed)), accepted: Mutex::new(VecDeque::new()) }
    }

    /// The next operation; a create when no accepted id is available for a change.
    pub fn next(&self, sequence: u64) -> Operation {
        let mut rng = self.rng.lock().expect("rng lock");
        let roll: f64 = rng.random();
        if roll < self.mix.reschedule + self.mix.cancel
            && let Some(delivery_id) = self.take_accepted(roll < self.mix.reschedule)
        {
            return if roll < self.mix.reschedule {
                let place = PLACES[rng.random_range(0..PLACES.len())];
                Operation::Reschedule { delivery_id, body: json!({ "dropOffLocation": place }) }
            } else {
                Operation::Cancel { delivery_id }
            };
        }
        let owner = rng.random_range(0..self.mix.owners.max(1));
        let pickup = if rng.random_bool(0.5) {
            PLACES[rng.random_range(0..PLACES.len())].to_owned()
        } else {
            format!("{:.5},{:.5}", rng.random_range(47.45..47.75), rng.random_range(-122.42..-122.15))
        };
        let dropoff = PLACES[rng.random_range(0..PLACES.len())];
        let size = ["Small", "Medium", "Large"][rng.random_range(0..3)];
        let weight = (rng.random_range(0.2..20.0_f64) * 10.0).round() / 10.0;
        let confirmation = ["None", "FingerPrint", "Picture", "Voice"][rng.random_range(0..4)];
        Operation::Create(json!({
            "ownerId": format!("owner-{owner:03}"),
            "pickupLocation": pickup,
            "dropOffLocation": dropoff,
            "pickupTime": chrono::Utc::now().to_rfc3339(),
            "deadline": "",
            "expedited": rng.random_bool(0.2),
            "confirmationRequired": confirmation,
            "packageInfo": {
                "packageId": format!("pkg-{sequence}-{}", rng.random::<u32>()),
                "size": size,
                "weight": weight,
                "tag": format!("tag-{}", sequence % 97)
            }
        }))
    }

    /// Remembers an accepted delivery (the last few thousand).
    pub fn accepted(&self, delivery_id: String) {
        let mut accepted = self.accepted.lock().expect("accepted lock");
        accepted.push_back(delivery_id);
        if accepted.len() > 4096 {
            accepted.pop_front();
        }
    }

    /// A reschedule keeps the id available; a cancel uses it up.
    fn take_accepted(&self, keep: bool) -> Option<String> {
        let mut accepted = self.accepted.lock().expect("accepted lock");
        if keep { accepted.back().cloned() } else { accepted.pop_front() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_until_ids_exist_then_mixes() {
        let workload = Workload::new(Mix { reschedule: 0.3, cancel: 0.2, owners: 10 }, 7);
        for i in 0..20 {
            assert!(matches!(workload.next(i), Operation::Create(_)));
        }
        for i in 0..200 {
            workload.accepted(format!("d{i}"));
        }
        let ops: Vec<Operation> = (0..1000).map(|i| workload.next(i)).collect();
        let creates = ops.iter().filter(|o| matches!(o, Operation::Create(_))).count();
        let cancels = ops.iter().filter(|o| matches!(o, Operation::Cancel { .. })).count();
        assert!((450..550).contains(&creates), "{creates}");
        assert!((150..250).contains(&cancels), "{cancels}");
        let Operation::Create(body) = &ops.iter().find(|o| matches!(o, Operation::Create(_))).unwrap() else {
            unreachable!()
        };
        assert!(body["packageInfo"]["weight"].as_f64().unwrap() > 0.0);
        assert!(body["ownerId"].as_str().unwrap().starts_with("owner-"));
    }

    #[test]
    fn the_same_seed_gives_the_same_requests() {
        let a = Workload::new(Mix { reschedule: 0.0, cancel: 0.0, owners: 5 }, 42);
        let b = Workload::new(Mix { reschedule: 0.0, cancel: 0.0, owners: 5 }, 42);
        let strip = |op: Operation| match op {
            Operation::Create(mut v) => {
                v["pickupTime"] = Value::Null;
                v
            }
            _ => unreachable!(),
        };
        assert_eq!(strip(a.next(1)), strip(b.next(1)));
    }
}
