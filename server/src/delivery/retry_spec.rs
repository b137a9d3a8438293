//! Building a retry policy from the parts a user gives (flags, API fields,
//! configuration), filling the rest from a base policy.

use std::time::Duration;

use crate::store::model::RetryPolicy;

/// The most attempts any policy may make.
pub const MAX_ATTEMPTS: u32 = 1000;
/// The first delay of an exponential policy when none is given.
const DEFAULT_EXPONENTIAL_INITIAL: Duration = Duration::from_secs(5);
/// The cap of an exponential policy when none is given.
const DEFAULT_EXPONENTIAL_MAX: Duration = Duration::from_secs(3600);
/// The step of a linear policy made from a policy without one.
const DEFAULT_LINEAR_INTERVAL: Duration = Duration::from_secs(60);

/// The parts of a policy a user may give; None takes the base policy's.
#[derive(Debug, Clone, Default)]
pub struct RetrySpec {
    pub kind: Option<String>,
    pub interval: Option<Duration>,
    pub factor: Option<f64>,
    pub max_interval: Option<Duration>,
    pub schedule: Option<Vec<Duration>>,
    pub max_attempts: Option<u32>,
}

/// A part that makes no valid policy: the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub field: &'static str,
    pub problem: String,
}

fn bad(field: &'static str, problem: impl Into<String>) -> SpecError {
    SpecError {
        field,
        problem: problem.into(),
    }
}

impl RetrySpec {
    /// The policy these parts make on top of `base` (the server default for
    /// a new target, the current policy for an update).
    ///
    /// # Errors
    /// The first part that is out of range, named by its field.
    pub fn resolve(&self, base: &RetryPolicy) -> Result<RetryPolicy, SpecError> {
        let kind = self
            .kind
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .unwrap_or(base.kind());
        if self.interval.is_some_and(|d| d.is_zero()) {
            return Err(bad("retry_interval", "must be greater than zero"));
        }
        if let Some(factor) = self.factor
            && !(factor.is_finite() && factor >= 1.0)
        {
            return Err(bad(
                "retry_factor",
                format!("{factor} must be a number of at least 1"),
            ));
        }
        if self.max_interval.is_some_and(|d| d.is_zero()) {
            return Err(bad("retry_max_interval", "must be greater than zero"));
        }
        if let Some(n) = self.max_attempts
            && !(1..=MAX_ATTEMPTS).contains(&n)
        {
            return Err(bad(
                "max_attempts",
                format!("{n} is out of range (1-{MAX_ATTEMPTS})"),
            ));
        }
        let max_attempts = self.max_attempts.unwrap_or_else(|| base.max_attempts());
        let policy = match kind {
            "linear" => RetryPolicy::Linear {
                interval: self.interval.unwrap_or(match base {
                    RetryPolicy::Linear { interval, .. } => *interval,
                    _ => DEFAULT_LINEAR_INTERVAL,
                }),
                max_attempts,
            },
            "exponential" => {
                let (initial, factor, max_interval) = match base {
                    RetryPolicy::Exponential {
                        initial,
                        factor,
                        max_interval,
                        ..
                    } => (*initial, *factor, *max_interval),
                    _ => (DEFAULT_EXPONENTIAL_INITIAL, 2.0, DEFAULT_EXPONENTIAL_MAX),
                };
                let initial = self.interval.unwrap_or(initial);
                let max_interval = self.max_interval.unwrap_or(max_interval.max(initial));
                if max_interval < initial {
                    return Err(bad(
                        "retry_max_interval",
                        format!(
                            "{} is shorter than the first delay {}",
                            humantime::format_duration(max_interval),
                            humantime::format_duration(initial)
                        ),
                    ));
                }
                RetryPolicy::Exponential {
                    initial,
                    factor: self.factor.unwrap_or(factor),
                    max_interval,
                    max_attempts,
                }
            }
            "schedule" => {
                let delays = match (&self.schedule, base) {
                    (Some(delays), _) => delays.clone(),
                    (None, RetryPolicy::Schedule { delays }) => delays.clone(),
                    (None, _) => {
                        return Err(bad(
                            "retry_schedule",
                            "the schedule policy needs a list of delays, e.g. 5s,5m,30m",
                        ));
                    }
                };
                if delays.is_empty() {
                    return Err(bad("retry_schedule", "must list at least one delay"));
                }
                if delays.iter().any(Duration::is_zero) {
                    return Err(bad(
                        "retry_schedule",
                        "every delay must be greater than zero",
                    ));
                }
                if delays.len() >= MAX_ATTEMPTS as usize {
                    return Err(bad(
                        "retry_schedule",
                        format!("at most {} delays", MAX_ATTEMPTS - 1),
                    ));
                }
                let attempts = delays.len() as u32 + 1;
                if self.max_attempts.is_some_and(|n| n != attempts) {
                    return Err(bad(
                        "max_attempts",
                        format!(
                            "a schedule of {} delays makes {attempts} attempts",
                            delays.len()
                        ),
                    ));
                }
                RetryPolicy::Schedule { delays }
            }
            "none" => RetryPolicy::None,
            other => {
                return Err(bad(
                    "retry",
                    format!(
                        "unknown policy {other:?}: expected linear, exponential, schedule or none"
                    ),
                ));
            }
        };
        Ok(policy)
    }
}

/// Parses `5s,5m,30m` into delays.
///
/// # Errors
/// A part that is not a duration.
pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINEAR: RetryPolicy = RetryPolicy::Linear {
        interval: Duration::from_secs(60),
        max_attempts: 10,
    };

    #[test]
    fn parts_fill_from_the_base_policy() {
        let spec = RetrySpec {
            kind: Some("exponential".into()),
            ..Default::default()
        };
        assert_eq!(
            spec.resolve(&LINEAR),
            Ok(RetryPolicy::Exponential {
                initial: Duration::from_secs(5),
                factor: 2.0,
                max_interval: Duration::from_secs(3600),
                max_attempts: 10
            })
        );
        let only_attempts = RetrySpec {
            max_attempts: Some(3),
            ..Default::default()
        };
        assert_eq!(
            only_attempts.resolve(&LINEAR),
            Ok(RetryPolicy::Linear {
                interval: Duration::from_secs(60),
                max_attempts: 3
            })
        );
        let schedule = RetrySpec {
            kind: Some("schedule".into()),
            schedule: Some(parse_schedule("5s,5m,30m,2h,5h,10h,10h").unwrap_or_default()),
            ..Default::default()
        };
        assert_eq!(schedule.resolve(&LINEAR).map(|p| p.max_attempts()), Ok(8));
    }

    #[test]
    fn invalid_parts_name_their_field() {
        let field = |spec: RetrySpec| spec.resolve(&LINEAR).err().map(|e| e.field);
        assert_eq!(
            field(RetrySpec {
                kind: Some("bogus".into()),
                ..Default::default()
            }),
            Some("retry")
        );
        assert_eq!(
            field(RetrySpec {
                interval: Some(Duration::ZERO),
                ..Default::default()
            }),
            Some("retry_interval")
        );
        assert_eq!(
            field(RetrySpec {
                factor: Some(0.5),
                ..Default::default()
            }),
            Some("retry_factor")
        );
        assert_eq!(
            field(RetrySpec {
                factor: Some(f64::NAN),
                ..Default::default()
            }),
            Some("retry_factor")
        );
        assert_eq!(
            field(RetrySpec {
                max_attempts: Some(0),
                ..Default::default()
            }),
            Some("max_attempts")
        );
        assert_eq!(
            field(RetrySpec {
                kind: Some("schedule".into()),
                ..Default::default()
            }),
            Some("retry_schedule")
        );
        assert_eq!(
            field(RetrySpec {
                kind: Some("schedule".into()),
                schedule: Some(vec![]),
                ..Default::default()
            }),
            Some("retry_schedule")
        );
        assert_eq!(
            field(RetrySpec {
                kind: Some("exponential".into()),
                interval: Some(Duration::from_secs(10)),
                max_interval: Some(Duration::from_secs(5)),
                ..Default::default()
            }),
            Some("retry_max_interval")
        );
        assert!(parse_schedule("5s,soon").is_err());
    }
}
