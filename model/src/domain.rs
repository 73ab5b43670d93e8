//! SIP domains: the rows of the domain module's `domain` table (`domain`,
//! `did`), checked the way the module and a Request-URI's host compare.

use std::collections::{BTreeMap, BTreeSet};

use crate::destination::split_host_port;
use crate::error::InvalidDomain;

/// Domain names by did, as one source (or the merge of all) sees them. The
/// empty did is a domain with no did of its own (the module then uses the
/// name as its did). A did is also the unit a source holds back when it
/// cannot vouch for its domains (see [`crate::Lists`]).
pub type DomainMap = BTreeMap<String, BTreeSet<String>>;

/// The longest did: ample for a tenant's name or UUID, short enough for a
/// log line.
pub const MAX_DID: usize = 64;

/// Checks a domain name and returns it as the table holds it: a host name
/// or IPv4 address in lowercase (SIP compares hosts without case), or an
/// IPv6 address in brackets, as it appears in a Request-URI.
pub fn domain_name(name: &str) -> Result<String, InvalidDomain> {
    let bad = |reason: String| InvalidDomain {
        value: name.to_owned(),
        reason,
    };
    let bracketed;
    let candidate = if !name.starts_with('[') && name.parse::<std::net::Ipv6Addr>().is_ok() {
        bracketed = format!("[{name}]");
        bracketed.as_str()
    } else {
        name
    };
    match split_host_port(candidate) {
        Ok((host, None)) if host.len() <= 253 => Ok(host.to_ascii_lowercase()),
        Ok((_, None)) => Err(bad("a domain name has at most 253 characters".into())),
        Ok((_, Some(_))) => Err(bad("a domain takes no port".into())),
        Err(reason) => Err(bad(reason)),
    }
}

/// Checks a did: empty (none), or 1 to [`MAX_DID`] ASCII letters, digits
/// and `.-_`.
pub fn did(did: &str) -> Result<String, InvalidDomain> {
    if did.len() > MAX_DID
        || did
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(InvalidDomain {
            value: did.to_owned(),
            reason: format!("a did is up to {MAX_DID} ASCII letters, digits and .-_"),
        });
    }
    Ok(did.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_canonical() {
        assert_eq!(domain_name("SIP.Example.COM").unwrap(), "sip.example.com");
        assert_eq!(domain_name("10.0.0.1").unwrap(), "10.0.0.1");
        assert_eq!(domain_name("2001:DB8::1").unwrap(), "[2001:db8::1]");
        assert_eq!(domain_name("[2001:db8::1]").unwrap(), "[2001:db8::1]");
    }

    #[test]
    fn bad_names_and_dids_name_the_culprit() {
        for bad in ["", "a b", "a:5060", "a;b", "bad\nname", &"a".repeat(254)] {
            let err = domain_name(bad).unwrap_err();
            assert!(err.to_string().contains(bad.trim()), "{err}");
        }
        assert_eq!(did("tenant-1").unwrap(), "tenant-1");
        assert_eq!(did("").unwrap(), "");
        assert!(did("a:b").unwrap_err().to_string().contains("a:b"));
        assert!(did(&"d".repeat(65)).is_err());
    }
}
