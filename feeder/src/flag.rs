//! The grammar flag values share, written once: a set's `ID[:PORT]`, the
//! `,KEY=VALUE` options after it, ports, and durations as Go and Consul
//! write them (`500ms`, `30s`, `1m30s`). `--set`, `--consul-service` and
//! `--consul-register` are parsed with these; their errors name the flag
//! value they come from.

use std::time::Duration;

use dsfeed_model::{SetId, validate_set_id};

/// Parses `ID[:PORT]`: the set id, and the port text for the caller to
/// read (a number, or for Kubernetes a port name).
pub fn set_target(target: &str) -> Result<(SetId, Option<&str>), String> {
    let (id, port) = match target.split_once(':') {
        Some((id, port)) => (id, Some(port)),
        None => (target, None),
    };
    let id = id
        .parse::<u64>()
        .map_err(|_| format!("set id '{id}' is not a number"))?;
    let id = validate_set_id(id).map_err(|e| e.to_string())?;
    Ok((id, port))
}

/// Splits `,KEY=VALUE` options; every value is non-empty and has no space
/// or control character.
pub fn options<'a>(
    parts: impl Iterator<Item = &'a str>,
) -> Result<Vec<(&'a str, &'a str)>, String> {
    parts
        .map(|option| {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| format!("option '{option}' is not KEY=VALUE"))?;
            if value.is_empty() || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(format!(
                    "option {key} needs a value without spaces or control characters"
                ));
            }
            Ok((key, value))
        })
        .collect()
}

/// A port number from 1 to 65535.
pub fn port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("port '{p}' is not a number from 1 to 65535")),
        Ok(port) => Ok(port),
    }
}

/// A duration as Go's `time.ParseDuration` and Consul write it: `500ms`,
/// `30s`, `5m`, `1h`, `1m30s`, `1.5s`; a bare `0` is zero.
pub fn duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("'{s}' is not a duration such as 500ms, 30s, 5m or 1m30s");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    // jiff also reads ISO 8601 ("PT5S") and words ("5 seconds"); a flag
    // value is a Go duration: digits, a dot, unit letters.
    let go_like = s.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '.');
    if !go_like {
        return Err(bad());
    }
    let parsed: jiff::SignedDuration = s.parse().map_err(|_| bad())?;
    Duration::try_from(parsed).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        for (text, ms) in [
            ("0", 0),
            ("500ms", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1m30s", 90_000),
            ("1.5s", 1_500),
            ("1h", 3_600_000),
        ] {
            assert_eq!(duration(text), Ok(Duration::from_millis(ms)), "{text}");
        }
        for bad in [
            "",
            "5",
            "s",
            "5x",
            "-1s",
            "PT5S",
            "5 seconds",
            "99999999999999999h",
        ] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn targets_options_and_ports() {
        assert_eq!(set_target("2:5080"), Ok((2, Some("5080"))));
        assert_eq!(set_target("7"), Ok((7, None)));
        assert!(set_target("x").unwrap_err().contains("set id 'x'"));
        assert!(
            set_target("3000000000")
                .unwrap_err()
                .contains("out of range")
        );
        assert_eq!(
            options(["tag=a", "attrs=k=v;w=1"].into_iter()),
            Ok(vec![("tag", "a"), ("attrs", "k=v;w=1")])
        );
        assert!(
            options(["tag"].into_iter())
                .unwrap_err()
                .contains("not KEY=VALUE")
        );
        assert!(
            options(["tag="].into_iter())
                .unwrap_err()
                .contains("needs a value")
        );
        assert_eq!(port("5060"), Ok(5060));
        assert!(port("0").is_err() && port("http").is_err());
    }
}
