//! Per-account API throttling: a token bucket (GCRA, from `governor`) per account on
//! each node. A bucket is rebuilt when the account's limits change.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Every account's bucket on this node.
#[derive(Default)]
pub struct Throttle {
    buckets: Mutex<HashMap<String, (Quota, Arc<DefaultDirectRateLimiter>)>>,
    clock: DefaultClock,
}

impl Throttle {
    /// Take one call from `account`'s bucket (`per_second` with bursts of `burst`), or say
    /// how long until one is allowed.
    pub fn check(&self, account: &str, per_second: u32, burst: u32) -> Result<(), Duration> {
        let one = NonZeroU32::MIN;
        let quota = Quota::per_second(NonZeroU32::new(per_second).unwrap_or(one))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(one));
        let limiter = {
            let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            match buckets.get(account) {
                Some((q, limiter)) if *q == quota => limiter.clone(),
                _ => {
                    let limiter = Arc::new(RateLimiter::direct(quota));
                    buckets.insert(account.to_string(), (quota, limiter.clone()));
                    limiter
                }
            }
        };
        limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_beyond_the_bucket_waits_and_other_accounts_do_not() {
        let t = Throttle::default();
        for _ in 0..3 {
            assert!(t.check("a", 1, 3).is_ok());
        }
        let wait = t.check("a", 1, 3).expect_err("the fourth call in a burst of 3 waits");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(t.check("b", 1, 3).is_ok(), "b has its own bucket");
        assert!(t.check("a", 1_000, 1_000).is_ok(), "new limits, new bucket");
    }
}
