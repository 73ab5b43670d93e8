//! The lists a snapshot carries beside dispatcher sets: rtpengine relays by
//! set id and SIP domains by did, with the parts a source cannot vouch for
//! yet held back, as dispatcher sets are.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;

use crate::destination::SetId;
use crate::domain::DomainMap;
use crate::relay::RelayMap;

/// Which list a client asks for, a sink writes or a source feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ListKind {
    /// rtpengine relays (the rtpengine module's `rtpengine` table).
    Rtpengine,
    /// SIP domains (the domain module's `domain` table).
    Domain,
}

impl ListKind {
    /// The name a flag, a log line and a metric label use.
    pub fn name(self) -> &'static str {
        match self {
            ListKind::Rtpengine => "rtpengine",
            ListKind::Domain => "domain",
        }
    }
}

impl std::str::FromStr for ListKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rtpengine" => Ok(ListKind::Rtpengine),
            "domain" | "domains" => Ok(ListKind::Domain),
            other => Err(format!("'{other}' is not a list: use rtpengine or domain")),
        }
    }
}

/// rtpengine relays and SIP domains, with what is held. A held rtpengine
/// set or did carries no content here, and every sink keeps what it has
/// for it (the rows of the table file as it is).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lists {
    pub rtpengine: RelayMap,
    pub domains: DomainMap,
    pub held_rtpengine: BTreeSet<SetId>,
    pub held_domains: BTreeSet<String>,
}

impl Lists {
    /// Whether there is nothing at all: no relay set, no did, nothing held.
    /// A snapshot with empty lists has the version it had before dsfeed
    /// knew of lists.
    pub fn is_empty(&self) -> bool {
        self.rtpengine.is_empty()
            && self.domains.is_empty()
            && self.held_rtpengine.is_empty()
            && self.held_domains.is_empty()
    }

    /// Adds `other`'s relays, domains and held parts to these (the union of
    /// several sources' views).
    pub fn merge(&mut self, other: &Lists) {
        for (id, relays) in &other.rtpengine {
            self.rtpengine
                .entry(*id)
                .or_default()
                .extend(relays.iter().cloned());
        }
        for (did, names) in &other.domains {
            self.domains
                .entry(did.clone())
                .or_default()
                .extend(names.iter().cloned());
        }
        self.held_rtpengine
            .extend(other.held_rtpengine.iter().copied());
        self.held_domains.extend(other.held_domains.iter().cloned());
    }

    /// Only the lists of `kinds`; the others empty.
    pub fn only(&self, kinds: &BTreeSet<ListKind>) -> Lists {
        let mut lists = Lists::default();
        if kinds.contains(&ListKind::Rtpengine) {
            lists.rtpengine = self.rtpengine.clone();
            lists.held_rtpengine = self.held_rtpengine.clone();
        }
        if kinds.contains(&ListKind::Domain) {
            lists.domains = self.domains.clone();
            lists.held_domains = self.held_domains.clone();
        }
        lists
    }

    pub fn relay_count(&self) -> usize {
        self.rtpengine.values().map(Vec::len).sum()
    }

    pub fn domain_count(&self) -> usize {
        self.domains.values().map(BTreeSet::len).sum()
    }

    /// Every domain as `(name, did)`, by did then name: one row of the
    /// domain table each, as the wire, `/status` and `dsfeed watch` list
    /// them.
    pub fn domain_entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.domains
            .iter()
            .flat_map(|(did, names)| names.iter().map(move |name| (name.as_str(), did.as_str())))
    }

    /// Canonical form: held parts carry no content; relays sorted by URL,
    /// a URL listed twice in one set kept once (the entry that sorts first
    /// wins); a domain name under one did only (the first did wins), since
    /// the module matches a Request-URI's host to one did.
    pub(crate) fn canonicalize(&mut self) {
        let held = &self.held_rtpengine;
        self.rtpengine.retain(|id, _| !held.contains(id));
        for relays in self.rtpengine.values_mut() {
            relays.sort();
            let mut seen = HashSet::new();
            relays.retain(|r| seen.insert(r.url().to_owned()));
        }
        let held = &self.held_domains;
        self.domains.retain(|did, _| !held.contains(did));
        let mut seen = HashSet::new();
        for names in self.domains.values_mut() {
            names.retain(|name| seen.insert(name.clone()));
        }
    }

    /// The lists as comment lines (`# rtpengine SETID URL weight=N
    /// [disabled]`, `# domain NAME [did=DID]`), which a `dispatcher.list`
    /// they follow reads past: what `dsfeed watch` prints.
    pub fn to_comment_lines(&self) -> String {
        let mut out = String::new();
        for (id, relays) in &self.rtpengine {
            for relay in relays {
                let _ = writeln!(out, "# rtpengine {id} {relay}");
            }
        }
        for (name, did) in self.domain_entries() {
            if did.is_empty() {
                let _ = writeln!(out, "# domain {name}");
            } else {
                let _ = writeln!(out, "# domain {name} did={did}");
            }
        }
        out
    }

    /// The lines these lists add to a snapshot's version body. Every field
    /// is named, so that a list added to [`Lists`] cannot be left out of the
    /// version.
    pub(crate) fn version_lines(&self, body: &mut String) {
        let Lists {
            rtpengine,
            domains,
            held_rtpengine,
            held_domains,
        } = self;
        version_section(body, rtpengine, held_rtpengine, |line| match line {
            Line::Group(id) => format!("# rtpengine set {id}"),
            Line::Member(id, relay) => format!("rtpengine {id} {relay}"),
            Line::Held(id) => format!("# held rtpengine {id}"),
        });
        version_section(body, domains, held_domains, |line| match line {
            Line::Group(did) => format!("# domain did {did:?}"),
            Line::Member(did, name) => format!("domain {name} {did:?}"),
            Line::Held(did) => format!("# held domain did {did:?}"),
        });
    }
}

/// One line of a list's part of a version body, keyed as the list is (an
/// rtpengine set id, a did).
enum Line<'a, K, M> {
    /// A group, before its members.
    Group(&'a K),
    Member(&'a K, &'a M),
    /// A held group, after every group.
    Held(&'a K),
}

/// Writes one list's part of a version body, each line as `show` renders
/// it: the groups with their members, then the held groups. What is
/// written is what the version hashes: it must never change.
fn version_section<'a, K, M: 'a, C>(
    body: &mut String,
    groups: &'a BTreeMap<K, C>,
    held: &'a BTreeSet<K>,
    show: impl Fn(Line<'a, K, M>) -> String,
) where
    &'a C: IntoIterator<Item = &'a M>,
{
    for (key, members) in groups {
        let _ = writeln!(body, "{}", show(Line::Group(key)));
        for member in members {
            let _ = writeln!(body, "{}", show(Line::Member(key, member)));
        }
    }
    for key in held {
        let _ = writeln!(body, "{}", show(Line::Held(key)));
    }
}
