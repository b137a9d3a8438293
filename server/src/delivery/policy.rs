//! What an attempt's outcome means, and when the next attempt is due.

use std::time::{Duration, SystemTime};

use rand::Rng;

use crate::store::model::{
    AttemptError, AttemptResponse, AttemptState, DeliverySettings, Micros, RetryPolicy,
};

/// The longest a Retry-After header may push the next attempt out.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How an attempt's outcome counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: the target has it.
    Delivered,
    /// Connection error, timeout, 408, 429 or 5xx (and 4xx with
    /// `retry_on_4xx`): worth trying again, not before `retry_after` if the
    /// target said so (429/503).
    Retryable { retry_after: Option<Duration> },
    /// Any other status (other 4xx, redirects not followed, 1xx): trying
    /// again won't help.
    Final,
    /// 410 Gone: the delivery fails and the target is disabled.
    Gone,
}

impl Verdict {
    /// For the circuit breaker: did the target look unwell?
    pub fn target_failed(self) -> Option<bool> {
        match self {
            Verdict::Delivered => Some(false),
            Verdict::Retryable { .. } => Some(true),
            Verdict::Final | Verdict::Gone => None,
        }
    }
}

/// Classifies an attempt's outcome under a target's settings.
pub fn classify(
    outcome: &Result<AttemptResponse, AttemptError>,
    settings: &DeliverySettings,
) -> Verdict {
    let response = match outcome {
        Err(_) => return Verdict::Retryable { retry_after: None },
        Ok(response) => response,
    };
    match response.status_code {
        200..=299 => Verdict::Delivered,
        410 => Verdict::Gone,
        429 | 503 => Verdict::Retryable {
            retry_after: retry_after(response, SystemTime::now()),
        },
        408 | 500..=599 => Verdict::Retryable { retry_after: None },
        400..=499 if settings.retry_on_4xx => Verdict::Retryable { retry_after: None },
        _ => Verdict::Final,
    }
}

/// The delay a `Retry-After` header asks for: seconds, or an HTTP date.
pub fn retry_after(response: &AttemptResponse, now: SystemTime) -> Option<Duration> {
    let value = response
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
        .map(|(_, value)| value.trim())?;
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The policy's delay before attempt `attempt + 1`, or None when `attempt`
/// (1-based) was the last one. Exponential delays get ±20% jitter from `rng`.
pub fn delay_after(policy: &RetryPolicy, attempt: u32, rng: &mut impl Rng) -> Option<Duration> {
    if attempt >= policy.max_attempts() {
        return None;
    }
    match policy {
        RetryPolicy::Linear { interval, .. } => Some(*interval),
        RetryPolicy::Exponential {
            initial,
            factor,
            max_interval,
            ..
        } => {
            let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
            let base = initial.as_secs_f64() * factor.powi(exponent);
            let capped = base.min(max_interval.as_secs_f64());
            let jittered = capped * rng.random_range(0.8..=1.2);
            Some(Duration::try_from_secs_f64(jittered).unwrap_or(*max_interval))
        }
        RetryPolicy::Schedule { delays } => {
            let index = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
            delays.get(index).copied()
        }
        RetryPolicy::None => None,
    }
}

/// The state after attempt number `attempt` (1-based) and when the next one
/// is due, if any. A Retry-After counts within [policy delay, 24 h].
pub fn next_step(
    policy: &RetryPolicy,
    attempt: u32,
    verdict: Verdict,
    now: Micros,
    rng: &mut impl Rng,
) -> (AttemptState, Option<Micros>) {
    match verdict {
        Verdict::Delivered => (AttemptState::Delivered, None),
        Verdict::Final | Verdict::Gone => (AttemptState::Failed, None),
        Verdict::Retryable { retry_after } => match delay_after(policy, attempt, rng) {
            None => (AttemptState::Failed, None),
            Some(delay) => {
                let delay = match retry_after {
                    Some(asked) => asked.min(MAX_RETRY_AFTER).max(delay),
                    None => delay,
                };
                let delay = i64::try_from(delay.as_micros()).unwrap_or(i64::MAX);
                (AttemptState::Retrying, Some(now.saturating_add(delay)))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn settings(retry_on_4xx: bool) -> DeliverySettings {
        DeliverySettings {
            retry: RetryPolicy::None,
            timeout: Duration::from_secs(30),
            follow_redirects: false,
            retry_on_4xx,
            max_in_flight: 32,
            rate: None,
            break_after: 10,
        }
    }

    fn status(code: u16, headers: &[(&str, &str)]) -> Result<AttemptResponse, AttemptError> {
        Ok(AttemptResponse {
            status_code: code,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: Bytes::new(),
            body_truncated: false,
        })
    }

    const RETRY: Verdict = Verdict::Retryable { retry_after: None };

    #[test]
    fn statuses_are_classified_as_the_policy_says() {
        let plain = settings(false);
        for code in [200, 201, 204, 299] {
            assert_eq!(
                classify(&status(code, &[]), &plain),
                Verdict::Delivered,
                "{code}"
            );
        }
        for code in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(classify(&status(code, &[]), &plain), RETRY, "{code}");
        }
        for code in [100, 301, 302, 307, 400, 401, 403, 404, 422] {
            assert_eq!(
                classify(&status(code, &[]), &plain),
                Verdict::Final,
                "{code}"
            );
        }
        assert_eq!(classify(&status(410, &[]), &plain), Verdict::Gone);
        let refused = Err(AttemptError {
            kind: "connect".into(),
            message: "refused".into(),
        });
        assert_eq!(classify(&refused, &plain), RETRY);

        let lenient = settings(true);
        assert_eq!(classify(&status(404, &[]), &lenient), RETRY);
        assert_eq!(classify(&status(410, &[]), &lenient), Verdict::Gone);
        assert_eq!(classify(&status(302, &[]), &lenient), Verdict::Final);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let seconds = status(429, &[("retry-after", "120")]);
        assert_eq!(
            retry_after(seconds.as_ref().unwrap(), now),
            Some(Duration::from_secs(120))
        );
        // 1_445_412_480 is Wed, 21 Oct 2015 07:28:00 GMT.
        let date = status(503, &[("Retry-After", "Wed, 21 Oct 2015 07:30:00 GMT")]);
        assert_eq!(
            retry_after(date.as_ref().unwrap(), now),
            Some(Duration::from_secs(120))
        );
        let past = status(503, &[("retry-after", "Wed, 21 Oct 2015 07:00:00 GMT")]);
        assert_eq!(
            retry_after(past.as_ref().unwrap(), now),
            Some(Duration::ZERO)
        );
        let junk = status(503, &[("retry-after", "soon")]);
        assert_eq!(retry_after(junk.as_ref().unwrap(), now), None);
    }

    #[test]
    fn retry_after_is_clamped_between_the_policy_delay_and_a_day() {
        let policy = RetryPolicy::Linear {
            interval: Duration::from_secs(60),
            max_attempts: 5,
        };
        let mut rng = StdRng::seed_from_u64(1);
        let asked = |secs| Verdict::Retryable {
            retry_after: Some(Duration::from_secs(secs)),
        };
        let at = |v| next_step(&policy, 1, v, 0, &mut StdRng::seed_from_u64(1)).1;
        assert_eq!(
            at(asked(5)),
            Some(60_000_000),
            "never sooner than the policy"
        );
        assert_eq!(at(asked(600)), Some(600_000_000));
        assert_eq!(
            at(asked(7 * 24 * 3600)),
            Some(24 * 3600 * 1_000_000),
            "at most 24 h"
        );
        assert_eq!(
            next_step(&policy, 5, asked(5), 0, &mut rng),
            (AttemptState::Failed, None)
        );
    }

    #[test]
    fn linear_policy_retries_at_the_interval_until_max_attempts() {
        let policy = RetryPolicy::Linear {
            interval: Duration::from_secs(60),
            max_attempts: 3,
        };
        let mut rng = StdRng::seed_from_u64(7);
        let now = 1_000_000;
        for attempt in [1, 2] {
            assert_eq!(
                next_step(&policy, attempt, RETRY, now, &mut rng),
                (AttemptState::Retrying, Some(now + 60_000_000))
            );
        }
        assert_eq!(
            next_step(&policy, 3, RETRY, now, &mut rng),
            (AttemptState::Failed, None)
        );
        assert_eq!(
            next_step(&policy, 1, Verdict::Final, now, &mut rng),
            (AttemptState::Failed, None)
        );
        assert_eq!(
            next_step(&policy, 1, Verdict::Gone, now, &mut rng),
            (AttemptState::Failed, None)
        );
        assert_eq!(
            next_step(&policy, 2, Verdict::Delivered, now, &mut rng),
            (AttemptState::Delivered, None)
        );
    }

    #[test]
    fn exponential_policy_doubles_with_jitter_up_to_the_cap() {
        let policy = RetryPolicy::Exponential {
            initial: Duration::from_secs(5),
            factor: 2.0,
            max_interval: Duration::from_secs(60),
            max_attempts: 8,
        };
        let mut rng = StdRng::seed_from_u64(42);
        let expected = [5.0, 10.0, 20.0, 40.0, 60.0, 60.0, 60.0];
        let mut jitters = Vec::new();
        for (i, want) in expected.iter().enumerate() {
            let attempt = u32::try_from(i + 1).unwrap();
            let got = delay_after(&policy, attempt, &mut rng)
                .unwrap()
                .as_secs_f64();
            assert!(
                got >= want * 0.8 - 1e-9 && got <= want * 1.2 + 1e-9,
                "attempt {attempt}: {got}s, want {want}s ±20%"
            );
            jitters.push(got / want);
        }
        assert!(
            jitters.iter().any(|j| (j - 1.0).abs() > 0.01),
            "jitter is applied: {jitters:?}"
        );
        assert_eq!(delay_after(&policy, 8, &mut rng), None);
    }

    #[test]
    fn schedule_and_none_policies() {
        let policy = RetryPolicy::Schedule {
            delays: vec![
                Duration::from_secs(5),
                Duration::from_secs(300),
                Duration::from_secs(1800),
            ],
        };
        let mut rng = StdRng::seed_from_u64(3);
        assert_eq!(policy.max_attempts(), 4);
        assert_eq!(
            delay_after(&policy, 1, &mut rng),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            delay_after(&policy, 2, &mut rng),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            delay_after(&policy, 3, &mut rng),
            Some(Duration::from_secs(1800))
        );
        assert_eq!(delay_after(&policy, 4, &mut rng), None);
        assert_eq!(delay_after(&RetryPolicy::None, 1, &mut rng), None);
        assert_eq!(
            next_step(&RetryPolicy::None, 1, RETRY, 0, &mut rng),
            (AttemptState::Failed, None)
        );
    }
}
