//! `,flags=N`, `,priority=N` and `,attrs=K=V;...`: the options a
//! discovery flag (`--set`, `--consul-service`, `--dns-srv`) gives every
//! destination of its set, read the same way whichever flag carries them.

use dsfeed_model::{Destination, InvalidDestination};

/// What a discovery flag gives every destination of its set. A value the
/// flag leaves out is kept as `None`, so that another source of it (a
/// Kubernetes annotation) can give it: [`Defaults::given_flags`] and the
/// like return each value as given, `None` included; [`Defaults::flags`]
/// and the like read `None` as 0 or empty, the value a destination gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Defaults {
    /// Dispatcher flags, as `--set` gives them.
    flags: Option<u32>,
    /// Dispatcher priority.
    priority: Option<u32>,
    /// Attrs, `k=v;k=v`.
    attrs: Option<String>,
}

impl Defaults {
    /// Takes one `KEY=VALUE` option of a flag if it is one of these:
    /// `Ok(false)` for another key, left to the flag's own options; `Err`
    /// with the reason when a number is not one.
    pub fn take(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let number = || {
            value
                .parse::<u32>()
                .map_err(|_| format!("{key} '{value}' is not a number"))
        };
        match key {
            "flags" => self.flags = Some(number()?),
            "priority" => self.priority = Some(number()?),
            "attrs" => self.attrs = Some(value.to_owned()),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Whether the flag gave none of these options.
    pub fn is_empty(&self) -> bool {
        *self == Defaults::default()
    }

    /// The flags, 0 when the flag gives none.
    pub fn flags(&self) -> u32 {
        self.flags.unwrap_or(0)
    }

    /// The priority, 0 when the flag gives none.
    pub fn priority(&self) -> u32 {
        self.priority.unwrap_or(0)
    }

    /// The attrs, empty when the flag gives none.
    pub fn attrs(&self) -> &str {
        self.attrs.as_deref().unwrap_or_default()
    }

    /// The flags if the flag gives them.
    pub fn given_flags(&self) -> Option<u32> {
        self.flags
    }

    /// The priority if the flag gives one.
    pub fn given_priority(&self) -> Option<u32> {
        self.priority
    }

    /// The attrs if the flag gives them.
    pub fn given_attrs(&self) -> Option<&str> {
        self.attrs.as_deref()
    }

    /// Checks the values the way Kamailio's loader would read them, so a
    /// flag Kamailio would misread is refused at start.
    pub fn check(&self) -> Result<(), InvalidDestination> {
        Destination::new(
            "sip:check:5060",
            self.flags(),
            self.priority(),
            self.attrs(),
        )
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_taken_and_others_left() {
        let mut defaults = Defaults::default();
        assert!(defaults.is_empty());
        assert_eq!(
            (defaults.given_flags(), defaults.flags(), defaults.attrs()),
            (None, 0, "")
        );
        for (key, value) in [("flags", "8"), ("priority", "10"), ("attrs", "duid=a")] {
            assert_eq!(defaults.take(key, value), Ok(true), "{key}");
        }
        assert_eq!(defaults.take("tag", "primary"), Ok(false));
        assert_eq!(
            (defaults.flags(), defaults.priority(), defaults.attrs()),
            (8, 10, "duid=a")
        );
        assert_eq!(
            (defaults.given_priority(), defaults.given_attrs()),
            (Some(10), Some("duid=a"))
        );
        assert!(!defaults.is_empty());
        assert!(defaults.check().is_ok());
        assert_eq!(
            defaults.take("priority", "-1"),
            Err("priority '-1' is not a number".into())
        );
        defaults.take("flags", "64").unwrap();
        assert!(defaults.check().is_err());
    }
}
