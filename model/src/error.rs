//! The model's errors, each naming its culprit, and the one way dsfeed
//! prints an error with its causes.

use std::time::Duration;

/// A destination, set id or attribute that Kamailio's `dispatcher.list`
/// loader would misread. Each variant names the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDestination {
    #[error("set id {0} is out of range (0 to 2147483647)")]
    SetId(u64),
    #[error("'{target}' is not HOST[:PORT] or a sip:/sips: URI: {reason}")]
    Target { target: String, reason: String },
    #[error("URI '{uri}' is invalid: {reason}")]
    Uri { uri: String, reason: String },
    #[error(
        "flags {0} has bits Kamailio does not know (valid: 1 inactive, 2 trying, 4 disabled, 8 probing, 16 no-DNS)"
    )]
    Flags(u32),
    #[error("priority {0} is out of range (0 to 2147483647)")]
    Priority(u32),
    #[error("attrs '{attrs}' are invalid: {reason} (write k=v;k=v with no whitespace or '#')")]
    Attrs { attrs: String, reason: String },
    #[error(
        "the line for '{uri}' would take {len} bytes; Kamailio reads dispatcher.list with a 1024-byte line buffer, which leaves a destination 1011"
    )]
    LineTooLong { uri: String, len: usize },
}

/// An rtpengine relay the rtpengine module would not load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rtpengine relay '{relay}' is invalid: {reason}")]
pub struct InvalidRelay {
    pub relay: String,
    pub reason: String,
}

/// A SIP domain name or did the domain module could not match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("domain '{value}' is invalid: {reason}")]
pub struct InvalidDomain {
    pub value: String,
    pub reason: String,
}

/// A feed response that breaks the contract or the list format: a client
/// NACKs it and keeps its previous sets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSnapshot {
    #[error("response has no version")]
    NoVersion,
    #[error(
        "version \"{0}\" is not 1 to 128 visible ASCII characters (it is written into logs and list files)"
    )]
    Version(String),
    #[error("set id {0} is above 2147483647")]
    SetId(u32),
    #[error("set {0} appears twice")]
    DuplicateSet(u32),
    #[error("set {0} was not requested")]
    UnwantedSet(u32),
    #[error("set {set}: {uri:?} appears twice")]
    DuplicateUri { set: u32, uri: String },
    #[error("{0}")]
    List(String),
    #[error("set {set}: destination {uri:?}: {source}")]
    Destination {
        set: u32,
        uri: String,
        #[source]
        source: InvalidDestination,
    },
    /// A delta on a version this client does not hold: the feeder sends
    /// that version in full when told so.
    #[error("a delta on version {0:?}, which this client does not hold")]
    UnknownBase(String),
    #[error("the delta removes set {0}, which {1}")]
    RemovedSet(u32, &'static str),
    #[error("completed, the delta has {0}")]
    OverBudget(String),
}

impl InvalidSnapshot {
    /// Whether the full snapshot of the same version may still be fine: the
    /// client lacks the delta's base, nothing is wrong with the content.
    pub fn wants_full(&self) -> bool {
        matches!(self, InvalidSnapshot::UnknownBase(_))
    }
}

/// Backoff settings that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidBackoff {
    #[error("the minimum delay must be above zero")]
    ZeroMin,
    #[error("the maximum delay {max:?} is below the minimum {min:?}")]
    MaxBelowMin { min: Duration, max: Duration },
    #[error("jitter {0} is outside 0..=1")]
    Jitter(f64),
}

/// A feed address that does not parse, or does not fit where it is used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{endpoint}': {reason}")]
pub struct InvalidEndpoint {
    pub endpoint: String,
    pub reason: String,
}

/// An error and its causes on one line, for logs, NACKs and status pages,
/// where the cause (a refused connection, a bad certificate) is what the
/// reader needs. A cause whose text the line already ends with is not
/// repeated (tonic's transport errors print their cause themselves).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("outer: refused")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn causes_are_on_one_line_once() {
        let refused = || std::io::Error::other("refused");
        assert_eq!(error_chain(&Outer(refused())), "outer: refused");
        assert_eq!(error_chain(&Repeats(refused())), "outer: refused");
    }
}
