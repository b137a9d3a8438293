//! What an attempt's outcome means, and when the next attempt is due.

use crate::store::model::{AttemptError, AttemptResponse, AttemptState, Micros, RetryPolicy};

/// How an attempt's outcome counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: the target has it.
    Delivered,
    /// Connection error, timeout, 408, 429 or 5xx: worth trying again.
    Retryable,
    /// Any other status (other 4xx, 3xx redirects, 1xx): trying again won't help.
    Final,
}

/// Classifies an attempt's outcome.
pub fn classify(outcome: &Result<AttemptResponse, AttemptError>) -> Verdict {
    match outcome {
        Err(_) => Verdict::Retryable,
        Ok(response) => match response.status_code {
            200..=299 => Verdict::Delivered,
            408 | 429 | 500..=599 => Verdict::Retryable,
            _ => Verdict::Final,
        },
    }
}

/// The state after attempt number `attempt` (1-based) and when the next one
/// is due, if any.
pub fn next_step(
    policy: &RetryPolicy,
    attempt: u32,
    verdict: Verdict,
    now: Micros,
) -> (AttemptState, Option<Micros>) {
    match verdict {
        Verdict::Delivered => (AttemptState::Delivered, None),
        Verdict::Final => (AttemptState::Failed, None),
        Verdict::Retryable if attempt >= policy.max_attempts => (AttemptState::Failed, None),
        Verdict::Retryable => {
            let delay = i64::try_from(policy.interval.as_micros()).unwrap_or(i64::MAX);
            (AttemptState::Retrying, Some(now.saturating_add(delay)))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    fn status(code: u16) -> Result<AttemptResponse, AttemptError> {
        Ok(AttemptResponse {
            status_code: code,
            headers: Vec::new(),
            body: Bytes::new(),
            body_truncated: false,
        })
    }

    #[test]
    fn statuses_are_classified_as_the_policy_says() {
        for code in [200, 201, 204, 299] {
            assert_eq!(classify(&status(code)), Verdict::Delivered, "{code}");
        }
        for code in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(classify(&status(code)), Verdict::Retryable, "{code}");
        }
        for code in [100, 301, 302, 307, 400, 401, 403, 404, 410, 422] {
            assert_eq!(classify(&status(code)), Verdict::Final, "{code}");
        }
        let refused = Err(AttemptError {
            kind: "connect".into(),
            message: "refused".into(),
        });
        assert_eq!(classify(&refused), Verdict::Retryable);
    }

    #[test]
    fn linear_policy_retries_at_the_interval_until_max_attempts() {
        let policy = RetryPolicy {
            interval: Duration::from_secs(60),
            max_attempts: 3,
        };
        let now = 1_000_000;
        assert_eq!(
            next_step(&policy, 1, Verdict::Retryable, now),
            (AttemptState::Retrying, Some(now + 60_000_000))
        );
        assert_eq!(
            next_step(&policy, 2, Verdict::Retryable, now),
            (AttemptState::Retrying, Some(now + 60_000_000))
        );
        assert_eq!(
            next_step(&policy, 3, Verdict::Retryable, now),
            (AttemptState::Failed, None)
        );
        assert_eq!(
            next_step(&policy, 1, Verdict::Final, now),
            (AttemptState::Failed, None)
        );
        assert_eq!(
            next_step(&policy, 2, Verdict::Delivered, now),
            (AttemptState::Delivered, None)
        );
    }
}
