//! Rate limits on the token endpoint, per source address and per client, with the GCRA core
//! from `shared`. A failed authentication costs [`FAILED_AUTH_COST`] requests, so guessing
//! secrets runs out of budget fast. State is per instance and in memory: it bounds abuse of
//! one instance; the edge enforces the clients' API plans.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;

use shared::rate_limit::{check_weighted, Decision, GcraState};
use shared::{RatePlan, UnixTime};

/// What a failed client authentication costs, in requests.
pub const FAILED_AUTH_COST: u32 = 5;
/// Entries kept per table before idle ones are swept.
const MAX_ENTRIES: usize = 100_000;

/// One GCRA table keyed by `K`, bounded in size.
#[derive(Debug)]
struct Table<K> {
    plan: RatePlan,
    states: Mutex<HashMap<K, GcraState>>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(plan: RatePlan) -> Self {
        Self {
            plan,
            states: Mutex::new(HashMap::new()),
        }
    }

    fn check(&self, key: &K, now: UnixTime, cost: u32) -> Decision {
        let mut states = match self.states.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if states.len() >= MAX_ENTRIES && !states.contains_key(key) {
            // Idle entries (TAT in the past) carry no information: a fresh state is the same.
            let now_nanos = now.as_millis().saturating_mul(1_000_000);
            states.retain(|_, state| state.tat_nanos > now_nanos);
        }
        let state = states.get(key).copied().unwrap_or_default();
        let (decision, next) = check_weighted(&self.plan, state, now, cost);
        if states.len() < MAX_ENTRIES || states.contains_key(key) {
            states.insert(key.clone(), next);
        }
        decision
    }
}

/// The per-address and per-client limiters: the token endpoint's, which revocation and
/// introspection share (they authenticate clients the same way), and the feed's own.
#[derive(Debug)]
pub struct TokenLimits {
    per_address: Table<IpAddr>,
    per_client: Table<String>,
    feed_per_address: Table<IpAddr>,
}

impl TokenLimits {
    /// Limiters with these plans.
    #[must_use]
    pub fn new(per_address: RatePlan, per_client: RatePlan, feed_per_address: RatePlan) -> Self {
        Self {
            per_address: Table::new(per_address),
            per_client: Table::new(per_client),
            feed_per_address: Table::new(feed_per_address),
        }
    }

    /// Charges one read of the revocation feed to `address`'s network.
    pub fn feed(&self, address: IpAddr, now: UnixTime) -> Decision {
        let network = shared::rate_limit::address_network(address);
        self.feed_per_address.check(&network, now, 1)
    }

    /// Charges one request (or a failed authentication) to `address`'s network (the
    /// address for IPv4, its `/64` for IPv6: `shared::rate_limit::address_network`).
    pub fn address(&self, address: IpAddr, now: UnixTime, failed_auth: bool) -> Decision {
        let cost = if failed_auth { FAILED_AUTH_COST } else { 1 };
        let network = shared::rate_limit::address_network(address);
        self.per_address.check(&network, now, cost)
    }

    /// Charges one grant to `client_id`.
    pub fn client(&self, client_id: &str, now: UnixTime) -> Decision {
        self.per_client.check(&client_id.to_owned(), now, 1)
    }
}
