//! Argument checks shared by the admin services. Every failure is
//! INVALID_ARGUMENT and names the field.

use std::time::Duration;

use tonic::Status;

/// A field's value is out of range or malformed.
pub fn invalid(field: &str, problem: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {problem}"))
}

/// A display name: 1 to `max` characters after trimming, no control characters.
pub fn name(field: &str, value: &str, max: usize) -> Result<String, Status> {
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(invalid(field, format!("must be at most {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

/// A positive id.
pub fn id(field: &str, value: i64) -> Result<i64, Status> {
    if value <= 0 {
        return Err(invalid(
            field,
            format!("{value} is not a valid id (ids are positive integers)"),
        ));
    }
    Ok(value)
}

/// An optional positive id, 0 meaning none.
pub fn optional_id(field: &str, value: i64) -> Result<Option<i64>, Status> {
    match value {
        0 => Ok(None),
        v => id(field, v).map(Some),
    }
}

/// A stored record id: 32 hex characters, returned lowercase.
pub fn record_id(field: &str, value: &str) -> Result<String, Status> {
    let value = value.trim();
    if value.len() != 32 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(
            field,
            format!("{value:?} is not a record id (32 hex characters)"),
        ));
    }
    Ok(value.to_ascii_lowercase())
}

/// A duration within `(0, max]`, or `default` when absent.
pub fn duration(
    field: &str,
    value: Option<prost_types::Duration>,
    default: Duration,
    max: Duration,
) -> Result<Duration, Status> {
    let Some(value) = value else {
        return Ok(default);
    };
    if value.seconds < 0 || value.nanos < 0 || (value.seconds == 0 && value.nanos == 0) {
        return Err(invalid(field, "must be greater than zero"));
    }
    let duration = Duration::new(value.seconds as u64, value.nanos as u32);
    if duration > max {
        return Err(invalid(
            field,
            format!("must be at most {}", humantime::format_duration(max)),
        ));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_must_be_positive_and_bounded() {
        let max = Duration::from_secs(60);
        let d = |seconds, nanos| Some(prost_types::Duration { seconds, nanos });
        assert_eq!(duration("f", None, max, max).ok(), Some(max));
        assert_eq!(
            duration("f", d(1, 500), max, max).ok(),
            Some(Duration::new(1, 500))
        );
        for bad in [d(0, 0), d(-1, 0), d(0, -5), d(61, 0)] {
            let status = duration("retry_interval", bad, max, max).err();
            assert!(
                status.is_some_and(|s| s.code() == tonic::Code::InvalidArgument
                    && s.message().starts_with("retry_interval: "))
            );
        }
    }

    #[test]
    fn record_ids_are_32_hex_characters() {
        let id = "C68DB85FD7A47D6C3AC5D3BBE9742DAC";
        assert_eq!(
            record_id("id", id).ok().as_deref(),
            Some("c68db85fd7a47d6c3ac5d3bbe9742dac")
        );
        for bad in [
            "",
            "123",
            "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
            "c68db85fd7a47d6c3ac5d3bbe9742dac0",
        ] {
            assert!(record_id("id", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            name("name", "  Github ", 10).ok().as_deref(),
            Some("Github")
        );
        assert!(name("name", "   ", 10).is_err());
        assert!(name("name", "abcdefghijk", 10).is_err());
        assert!(name("name", "a\u{0}b", 10).is_err());
    }
}
