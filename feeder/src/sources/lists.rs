//! What a discovery source's endpoints feed: dispatcher sets, an rtpengine
//! set, or SIP domains. Kubernetes and Consul find endpoints the same way
//! whatever they feed; this turns their destinations into the list asked
//! for, so each source keeps one discovery path and one hold rule.
//!
//! It also holds what their domain flags (`--domain-set`, `--consul-domain`)
//! share: the [`Domains`] they read into, and [`split_domain`] for the
//! `NAME[=DID]` they start with; each source reads the service name and
//! words its errors itself.

use std::collections::BTreeSet;

use dsfeed_model::domain::{did, domain_name};
use dsfeed_model::{InvalidDomain, Lists, Relay, SetId, SetMap};

/// The list a discovery flag feeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feeds {
    /// Dispatcher sets (`--set`, `--consul-service`).
    Dispatcher,
    /// rtpengine sets, by the same set ids (`--rtpengine-set`,
    /// `--consul-rtpengine`): each destination's host and port become a
    /// control URL `udp:HOST:PORT`, a draining one a disabled relay.
    Rtpengine,
    /// SIP domains under this did (`--consul-domain`): each destination's
    /// host becomes a domain; set ids and ports do not matter.
    Domain(String),
}

impl Feeds {
    /// The view of `sets` (destinations by set id, as the source found
    /// them) as this list. A destination that makes no valid relay or
    /// domain is dropped alone, and `dropped` hears why.
    pub fn view(&self, sets: SetMap, mut dropped: impl FnMut(String)) -> (SetMap, Lists) {
        let mut lists = Lists::default();
        match self {
            Feeds::Dispatcher => return (sets, lists),
            Feeds::Rtpengine => {
                for (id, dests) in sets {
                    let relays = lists.rtpengine.entry(id).or_default();
                    for dest in dests {
                        match Relay::of_destination(&dest, None) {
                            Ok(relay) => relays.push(relay),
                            Err(err) => dropped(err.to_string()),
                        }
                    }
                }
            }
            Feeds::Domain(did) => {
                let names = lists.domains.entry(did.clone()).or_default();
                for dest in sets.into_values().flatten() {
                    match domain_name(dest.host()) {
                        Ok(name) => {
                            names.insert(name);
                        }
                        Err(err) => dropped(err.to_string()),
                    }
                }
            }
        }
        (SetMap::new(), lists)
    }

    /// The held parts that stand for sets `ids` held, in this list.
    pub fn held(&self, ids: BTreeSet<SetId>) -> (BTreeSet<SetId>, Lists) {
        let mut lists = Lists::default();
        match self {
            Feeds::Dispatcher => return (ids, lists),
            Feeds::Rtpengine => lists.held_rtpengine = ids,
            Feeds::Domain(did) => {
                lists.held_domains.insert(did.clone());
            }
        }
        (BTreeSet::new(), lists)
    }

    /// A word for logs: `sets`, `rtpengine` or `domains`.
    pub fn noun(&self) -> &'static str {
        match self {
            Feeds::Dispatcher => "sets",
            Feeds::Rtpengine => "rtpengine",
            Feeds::Domain(_) => "domains",
        }
    }
}

/// A discovery flag that feeds SIP domains (`--domain-set`,
/// `--consul-domain`): the service followed, as its source's set flag reads
/// it, and the did its endpoints' hosts go under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domains<S> {
    pub service: S,
    /// Empty: none (the domain module uses the name).
    pub did: String,
}

/// Splits the `NAME[=DID]` that starts a domain flag (the part before any
/// `,`) into the service name, for the source to read, and the did,
/// checked.
pub fn split_domain(head: &str) -> Result<(&str, String), InvalidDomain> {
    let (name, did_part) = head.split_once('=').unwrap_or((head, ""));
    Ok((name, did(did_part)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsfeed_model::Destination;

    fn sets() -> SetMap {
        SetMap::from([(
            3,
            vec![
                Destination::new("sip:10.0.0.1:22222", 0, 0, "").unwrap(),
                Destination::new("sip:[2001:db8::1]:2000", 4, 0, "").unwrap(),
                Destination::new("sip:Media.Example:5060", 0, 0, "").unwrap(),
            ],
        )])
    }

    #[test]
    fn destinations_become_relays_or_domains() {
        let (none, lists) = Feeds::Rtpengine.view(sets(), |_| {});
        assert!(none.is_empty());
        let relays: Vec<String> = lists.rtpengine[&3].iter().map(|r| r.to_string()).collect();
        assert_eq!(
            relays,
            [
                "udp:10.0.0.1:22222 weight=1",
                "udp6:[2001:db8::1]:2000 weight=1 disabled",
                "udp:Media.Example:5060 weight=1"
            ]
        );
        let (_, lists) = Feeds::Domain("t1".into()).view(sets(), |_| {});
        assert_eq!(
            lists.domains["t1"].iter().collect::<Vec<_>>(),
            ["10.0.0.1", "[2001:db8::1]", "media.example"]
        );
        let (kept, lists) = Feeds::Dispatcher.view(sets(), |_| {});
        assert_eq!(kept, sets());
        assert!(lists.is_empty());
    }

    #[test]
    fn a_domain_flag_splits_into_service_and_did() {
        assert_eq!(
            split_domain("edge:sbc=t-1").unwrap(),
            ("edge:sbc", "t-1".into())
        );
        assert_eq!(split_domain("sbc").unwrap(), ("sbc", String::new()));
        assert!(split_domain("sbc=a:b").is_err());
    }

    #[test]
    fn held_sets_become_held_lists() {
        let (ids, lists) = Feeds::Domain(String::new()).held(BTreeSet::from([3]));
        assert!(ids.is_empty());
        assert_eq!(lists.held_domains, BTreeSet::from([String::new()]));
        let (ids, lists) = Feeds::Rtpengine.held(BTreeSet::from([3]));
        assert!(ids.is_empty());
        assert_eq!(lists.held_rtpengine, BTreeSet::from([3]));
    }
}
