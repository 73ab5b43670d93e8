//! What one feed response may hold, on both ends of the stream: the feeder
//! sends nothing beyond it, and a client (dsfeed.so, `dsfeed watch`) counts
//! a response's records on the wire before decoding it.
//!
//! Bytes alone are no budget: an empty `Destination` is two bytes on the
//! wire and ~60 bytes decoded, so a response within any byte cap could cost
//! thirty times its size. [`ResponseCodec`] scans the bytes first (no
//! allocation) and hands an over-budget response to the client as
//! [`Incoming::OverBudget`] with its version and nonce, so the client NACKs
//! it and stays connected instead of reconnecting to download it again.

use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

use super::{FeedRequest, FeedResponse};
use crate::Snapshot;

/// The most destinations one response carries, all sets together. The
/// stock dispatcher keeps two lists of ~343 bytes of shm per destination
/// (about 34 MB here), its loader is quadratic within a set of equal
/// priority, and real deployments have thousands at most.
pub const MAX_DESTINATIONS: usize = 50_000;

/// The most sets one response carries.
pub const MAX_SETS: usize = 10_000;

/// The largest response in bytes: [`MAX_DESTINATIONS`] destinations of the
/// widest line Kamailio reads (1,011 bytes, plus framing) fit; clients
/// decode up to this, the feeder encodes up to this.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// The longest nonce an over-budget response may carry to be NACKed.
const MAX_NONCE: usize = 1024;

/// The bytes `response` takes on the wire (the protobuf message, without
/// gRPC's 5-byte frame header).
pub fn encoded_len(response: &FeedResponse) -> usize {
    prost::Message::encoded_len(response)
}

/// A response's size, as counted on the wire or from a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub sets: usize,
    pub destinations: usize,
    pub bytes: usize,
}

impl Size {
    /// What `snapshot` sent as `response` would weigh.
    pub fn of(snapshot: &Snapshot, response: &FeedResponse) -> Size {
        Size {
            bytes: encoded_len(response),
            ..Size::of_content(snapshot)
        }
    }

    /// The sets and destinations of `snapshot` (relays and domains count as
    /// destinations, rtpengine sets as sets), with no bytes: for a snapshot
    /// a client completed from a delta, never encoded whole.
    pub fn of_content(snapshot: &Snapshot) -> Size {
        let lists = snapshot.lists();
        Size {
            sets: snapshot.sets().len() + lists.rtpengine.len(),
            destinations: snapshot.destination_count() + lists.relay_count() + lists.domain_count(),
            bytes: 0,
        }
    }

    /// Why a client would refuse a response of this size, if it would.
    pub fn over_budget(&self) -> Option<String> {
        if self.destinations > MAX_DESTINATIONS {
            return Some(format!(
                "{} destinations, more than the {MAX_DESTINATIONS} a feed response may carry",
                self.destinations
            ));
        }
        if self.sets > MAX_SETS {
            return Some(format!(
                "{} sets, more than the {MAX_SETS} a feed response may carry",
                self.sets
            ));
        }
        if self.bytes > MAX_RESPONSE_BYTES {
            return Some(format!(
                "{} bytes, more than the {MAX_RESPONSE_BYTES} a feed response may take",
                self.bytes
            ));
        }
        None
    }
}

/// What a client's stream yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Response(FeedResponse),
    /// A response over the budget, not decoded: NACK it by its nonce.
    OverBudget {
        version: String,
        nonce: String,
        reason: String,
    },
}

/// The wire shape of a response, counted without decoding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    pub version: String,
    pub nonce: String,
    pub size: Size,
}

/// Counts the sets and destinations of an encoded `FeedResponse` and reads
/// its version and nonce, allocating nothing for the rest.
pub fn scan(bytes: &[u8]) -> Result<Scanned, String> {
    let mut version = String::new();
    let mut nonce = String::new();
    let mut sets = 0;
    let mut destinations = 0;
    for field in Fields(bytes) {
        let (number, value) = field?;
        match (number, value) {
            (1, Value::Bytes(text)) => version = utf8(text, "version_info")?,
            (2, Value::Bytes(text)) => {
                if text.len() > MAX_NONCE {
                    return Err(format!("a nonce of {} bytes", text.len()));
                }
                nonce = utf8(text, "nonce")?;
            }
            (3, Value::Bytes(set)) => {
                sets += 1;
                for member in Fields(set) {
                    if let (2, Value::Bytes(_)) = member? {
                        destinations += 1;
                    }
                }
            }
            // rtpengine sets and their relays, and domains, count as sets
            // and destinations do.
            (6, Value::Bytes(set)) => {
                sets += 1;
                for member in Fields(set) {
                    if let (2, Value::Bytes(_)) = member? {
                        destinations += 1;
                    }
                }
            }
            (7, Value::Bytes(_)) => destinations += 1,
            (1..=3 | 6 | 7, _) => return Err(format!("field {number} has the wrong wire type")),
            _ => {}
        }
    }
    Ok(Scanned {
        version,
        nonce,
        size: Size {
            sets,
            destinations,
            bytes: bytes.len(),
        },
    })
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
}

/// One protobuf field's value; only length-delimited ones are looked into.
enum Value<'a> {
    Scalar,
    Bytes(&'a [u8]),
}

/// The fields of one protobuf message, as (field number, value).
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let item = self.field();
        if item.is_err() {
            // Stop after an error: the rest cannot be framed.
            self.0 = &[];
        }
        Some(item)
    }
}

impl<'a> Fields<'a> {
    fn field(&mut self) -> Result<(u64, Value<'a>), String> {
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 {
            return Err("field number 0".into());
        }
        let value = match key & 7 {
            0 => {
                self.varint()?;
                Value::Scalar
            }
            1 => {
                self.take(8)?;
                Value::Scalar
            }
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| "a length beyond memory".to_owned())?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Scalar
            }
            other => return Err(format!("wire type {other}")),
        };
        Ok((number, value))
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for (i, byte) in self.0.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.0 = &self.0[i + 1..];
                return Ok(value);
            }
        }
        Err("a truncated or overlong varint".into())
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        if len > self.0.len() {
            return Err("a field runs past the end of the message".into());
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }
}

/// The client side of `dsfeed.v1.Feed/Stream`: requests encoded by prost,
/// responses scanned against the budget before prost decodes them.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResponseCodec;

impl Codec for ResponseCodec {
    type Encode = FeedRequest;
    type Decode = Incoming;
    type Encoder = ProstEncoder<FeedRequest>;
    type Decoder = BudgetDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(Default::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        BudgetDecoder(ProstDecoder::new(Default::default()))
    }
}

/// See [`ResponseCodec`].
#[derive(Debug)]
pub struct BudgetDecoder(ProstDecoder<FeedResponse>);

impl Decoder for BudgetDecoder {
    type Item = Incoming;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Incoming>, Status> {
        use bytes::Buf as _;
        let scanned = scan(buf.chunk())
            .map_err(|reason| Status::internal(format!("malformed feed response: {reason}")))?;
        if let Some(reason) = scanned.size.over_budget() {
            buf.advance(buf.remaining());
            return Ok(Some(Incoming::OverBudget {
                version: scanned.version,
                nonce: scanned.nonce,
                reason,
            }));
        }
        Ok(self.0.decode(buf)?.map(Incoming::Response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{Set, WireDestination};
    use prost::Message as _;

    fn response(sets: usize, per_set: usize) -> FeedResponse {
        FeedResponse {
            version_info: "v1".into(),
            nonce: "n-7".into(),
            sets: (0..sets)
                .map(|id| Set {
                    id: id as u32,
                    destinations: vec![WireDestination::default(); per_set],
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn relays_and_domains_count_as_destinations() {
        use crate::pb::{RtpengineSet, WireDomain, WireRelay};
        let mut with_lists = response(1, 1);
        with_lists.rtpengine_sets = vec![RtpengineSet {
            id: 1,
            relays: vec![WireRelay::default(); 3],
        }];
        with_lists.domains = vec![WireDomain::default(); 2];
        let scanned = scan(&with_lists.encode_to_vec()).unwrap();
        assert_eq!((scanned.size.sets, scanned.size.destinations), (2, 6));
    }

    #[test]
    fn scanning_counts_what_decoding_would_build() {
        let wire = response(3, 4).encode_to_vec();
        let scanned = scan(&wire).unwrap();
        assert_eq!(
            (scanned.version.as_str(), scanned.nonce.as_str()),
            ("v1", "n-7")
        );
        assert_eq!(
            scanned.size,
            Size {
                sets: 3,
                destinations: 12,
                bytes: wire.len()
            }
        );
        assert_eq!(scanned.size.over_budget(), None);
    }

    #[test]
    fn a_response_over_budget_is_named_not_decoded() {
        let over = response(1, MAX_DESTINATIONS + 1);
        let wire = over.encode_to_vec();
        // Two bytes per empty destination on the wire.
        assert!(wire.len() < 2 * MAX_DESTINATIONS + 100);
        let reason = scan(&wire).unwrap().size.over_budget().unwrap();
        assert!(
            reason.contains("50001 destinations") && reason.contains("50000"),
            "{reason}"
        );
        let sets = scan(&response(MAX_SETS + 1, 0).encode_to_vec()).unwrap();
        assert!(sets.size.over_budget().unwrap().contains("sets"));
    }

    #[test]
    fn malformed_bytes_are_errors_not_panics() {
        for bad in [
            &[0x0a, 0x05, b'a'][..],
            &[0x08],
            &[0xff; 11],
            &[0x0b],
            &[0x00, 0x00],
            &[0x12, 0x02, 0xff, 0xfe],
            &[0x18, 0x01],
        ] {
            assert!(scan(bad).is_err(), "{bad:02x?}");
        }
        assert_eq!(scan(&[]).unwrap().size.destinations, 0);
    }
}
