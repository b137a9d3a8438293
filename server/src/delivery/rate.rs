//! Per-target rate limits (`--rate=100/s`): a token bucket per target, held
//! by the worker that sends.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::store::model::RateLimit;

#[derive(Debug)]
struct Bucket {
    limit: RateLimit,
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let per_second = f64::from(self.limit.count) / self.limit.period.as_secs_f64().max(1e-9);
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(f64::from(self.limit.count));
        self.updated = now;
    }

    fn wait_for_token(&self) -> Duration {
        let per_second = f64::from(self.limit.count) / self.limit.period.as_secs_f64().max(1e-9);
        Duration::from_secs_f64(((1.0 - self.tokens) / per_second).max(0.0))
    }
}

/// The token buckets of every rate-limited target.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: HashMap<i64, Bucket>,
}

impl RateLimiter {
    /// Takes one send from `target_id`'s budget, or says how long until one
    /// is available. A changed limit starts a full bucket.
    pub fn try_take(
        &mut self,
        target_id: i64,
        limit: RateLimit,
        now: Instant,
    ) -> Result<(), Duration> {
        let bucket = self.buckets.entry(target_id).or_insert(Bucket {
            limit,
            tokens: f64::from(limit.count),
            updated: now,
        });
        if bucket.limit != limit {
            *bucket = Bucket {
                limit,
                tokens: f64::from(limit.count),
                updated: now,
            };
        }
        bucket.refill(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(bucket.wait_for_token())
        }
    }

    /// Targets with no send left right now, to leave out of the next claim,
    /// and how long until the first of them has one again.
    pub fn exhausted(&mut self, now: Instant) -> (Vec<i64>, Option<Duration>) {
        let mut soonest: Option<Duration> = None;
        let ids = self
            .buckets
            .iter_mut()
            .filter_map(|(id, bucket)| {
                bucket.refill(now);
                (bucket.tokens < 1.0).then(|| {
                    let wait = bucket.wait_for_token();
                    soonest = Some(soonest.map_or(wait, |s| s.min(wait)));
                    *id
                })
            })
            .collect();
        (ids, soonest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_count_per_period() {
        let limit = RateLimit {
            count: 2,
            period: Duration::from_secs(1),
        };
        let mut limiter = RateLimiter::default();
        let start = Instant::now();
        assert!(limiter.try_take(7, limit, start).is_ok());
        assert!(limiter.try_take(7, limit, start).is_ok());
        let wait = limiter.try_take(7, limit, start).err();
        assert!(
            wait.is_some_and(|w| w > Duration::from_millis(490) && w <= Duration::from_millis(500))
        );
        let (skip, wait) = limiter.exhausted(start);
        assert_eq!(skip, vec![7]);
        assert!(wait.is_some_and(|w| w <= Duration::from_millis(500)));
        let later = start + Duration::from_millis(500);
        assert!(limiter.try_take(7, limit, later).is_ok());
        assert!(
            limiter.try_take(8, limit, later).is_ok(),
            "buckets are per target"
        );
    }
}
