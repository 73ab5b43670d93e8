//! What `dsfeed.status` reports. The feed process publishes a `Status`
//! after every change; the RPC runs in another Kamailio process, so the
//! status crosses processes as a fixed-size, pointer-free `StatusRecord`
//! kept in shared memory.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dsfeed_model::SetId;

/// Where the feed connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkState {
    #[default]
    Starting,
    Connecting,
    Connected,
    /// Waiting before the next connect attempt.
    Backoff,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Starting => "starting",
            LinkState::Connecting => "connecting",
            LinkState::Connected => "connected",
            LinkState::Backoff => "backoff",
        }
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u8) -> Self {
        match code {
            1 => LinkState::Connecting,
            2 => LinkState::Connected,
            3 => LinkState::Backoff,
            _ => LinkState::Starting,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    pub state: LinkState,
    /// The feeder of the current (or last) connect attempt, as
    /// [`crate::transport::Candidate`] names it; empty before the first.
    pub feeder: String,
    /// Empty until the first snapshot is applied.
    pub applied_version: String,
    pub applied_at: Option<SystemTime>,
    /// Every set of the dispatcher's list after the last swap.
    pub sets: Vec<(SetId, usize)>,
    pub destinations: usize,
    pub swaps: u64,
    pub nacks: u64,
    pub connects: u64,
    pub last_error: String,
    pub last_error_at: Option<SystemTime>,
    /// The version the module could not apply yet and keeps retrying
    /// (empty when none), and how many attempts failed so far.
    pub retrying_version: String,
    pub retries: u64,
}

/// Somewhere the feed process publishes its status.
pub trait StatusSink {
    fn publish(&mut self, status: &Status);
}

/// How many sets the record lists; the totals stay exact beyond it.
pub const MAX_SETS: usize = 256;
const VERSION_LEN: usize = 128;
const ERROR_LEN: usize = 512;
const FEEDER_LEN: usize = 256;

/// `Status` in a form that can be copied byte for byte between processes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StatusRecord {
    state: u8,
    feeder_len: u16,
    feeder: [u8; FEEDER_LEN],
    version_len: u16,
    version: [u8; VERSION_LEN],
    error_len: u16,
    error: [u8; ERROR_LEN],
    applied_at_ms: u64,
    error_at_ms: u64,
    swaps: u64,
    nacks: u64,
    connects: u64,
    destinations: u64,
    retrying_len: u16,
    retrying: [u8; VERSION_LEN],
    retries: u64,
    set_total: u32,
    set_count: u32,
    sets: [[u32; 2]; MAX_SETS],
}

impl Default for StatusRecord {
    fn default() -> Self {
        StatusRecord {
            state: 0,
            feeder_len: 0,
            feeder: [0; FEEDER_LEN],
            version_len: 0,
            version: [0; VERSION_LEN],
            error_len: 0,
            error: [0; ERROR_LEN],
            applied_at_ms: 0,
            error_at_ms: 0,
            swaps: 0,
            nacks: 0,
            connects: 0,
            destinations: 0,
            retrying_len: 0,
            retrying: [0; VERSION_LEN],
            retries: 0,
            set_total: 0,
            set_count: 0,
            sets: [[0; 2]; MAX_SETS],
        }
    }
}

impl StatusRecord {
    pub fn from_status(status: &Status) -> Self {
        let mut record = StatusRecord {
            state: status.state.code(),
            applied_at_ms: to_ms(status.applied_at),
            error_at_ms: to_ms(status.last_error_at),
            swaps: status.swaps,
            nacks: status.nacks,
            connects: status.connects,
            destinations: status.destinations as u64,
            retries: status.retries,
            set_total: u32::try_from(status.sets.len()).unwrap_or(u32::MAX),
            ..StatusRecord::default()
        };
        record.feeder_len = copy_truncated(&mut record.feeder, &status.feeder);
        record.version_len = copy_truncated(&mut record.version, &status.applied_version);
        record.error_len = copy_truncated(&mut record.error, &status.last_error);
        record.retrying_len = copy_truncated(&mut record.retrying, &status.retrying_version);
        for (slot, (id, count)) in record.sets.iter_mut().zip(&status.sets) {
            *slot = [*id, u32::try_from(*count).unwrap_or(u32::MAX)];
            record.set_count += 1;
        }
        record
    }

    /// The status, and whether its set list was cut at `MAX_SETS`.
    pub fn to_status(self) -> (Status, bool) {
        let text = |bytes: &[u8], len: u16| {
            String::from_utf8_lossy(&bytes[..usize::from(len).min(bytes.len())]).into_owned()
        };
        let shown = (self.set_count as usize).min(MAX_SETS);
        let status = Status {
            state: LinkState::from_code(self.state),
            feeder: text(&self.feeder, self.feeder_len),
            applied_version: text(&self.version, self.version_len),
            applied_at: from_ms(self.applied_at_ms),
            sets: self.sets[..shown]
                .iter()
                .map(|[id, count]| (*id, *count as usize))
                .collect(),
            destinations: usize::try_from(self.destinations).unwrap_or(usize::MAX),
            swaps: self.swaps,
            nacks: self.nacks,
            connects: self.connects,
            last_error: text(&self.error, self.error_len),
            last_error_at: from_ms(self.error_at_ms),
            retrying_version: text(&self.retrying, self.retrying_len),
            retries: self.retries,
        };
        (status, self.set_total as usize > shown)
    }
}

/// Copies `text` into `buf`, cut at a character boundary.
fn copy_truncated(buf: &mut [u8], text: &str) -> u16 {
    let mut len = text.len().min(buf.len());
    while !text.is_char_boundary(len) {
        len -= 1;
    }
    buf[..len].copy_from_slice(&text.as_bytes()[..len]);
    u16::try_from(len).unwrap_or(u16::MAX)
}

fn to_ms(at: Option<SystemTime>) -> u64 {
    at.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_ms(ms: u64) -> Option<SystemTime> {
    (ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips() {
        let at = UNIX_EPOCH + Duration::from_millis(1_790_000_000_123);
        let status = Status {
            state: LinkState::Connected,
            feeder: "https://feeders.test:7000 (10.0.0.2:7000)".into(),
            applied_version: "3f2a".into(),
            applied_at: Some(at),
            sets: vec![(1, 3), (9, 0)],
            destinations: 3,
            swaps: 7,
            nacks: 1,
            connects: 2,
            last_error: "set 1: bad".into(),
            last_error_at: Some(at),
            retrying_version: "4e5f".into(),
            retries: 3,
        };
        let (back, truncated) = StatusRecord::from_status(&status).to_status();
        assert_eq!(back, status);
        assert!(!truncated);
    }

    #[test]
    fn long_fields_are_cut_not_lost() {
        let status = Status {
            last_error: "é".repeat(400),
            sets: (0..300).map(|id| (id, 1)).collect(),
            destinations: 300,
            ..Status::default()
        };
        let (back, truncated) = StatusRecord::from_status(&status).to_status();
        assert!(truncated);
        assert_eq!(back.sets.len(), MAX_SETS);
        assert_eq!(back.destinations, 300);
        assert_eq!(back.last_error.len(), 512);
        assert!(back.last_error.chars().all(|c| c == 'é'));
    }
}

/// `2026-05-01T12:00:00Z`: UTC with second precision, for the RPC.
pub fn rfc3339(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil-from-days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod time_tests {
    use super::*;

    #[test]
    fn formats_utc_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723);
        assert_eq!(rfc3339(leap), "2000-02-29T01:02:03Z");
        let later = UNIX_EPOCH + Duration::from_secs(1_798_761_599);
        assert_eq!(rfc3339(later), "2026-12-31T23:59:59Z");
    }
}
