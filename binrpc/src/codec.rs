//! binrpc's wire format, as specified in the header comment of Kamailio's
//! `src/modules/ctl/binrpc.h` and produced by ctl's `binrpc_run.c`.
//!
//! A message is a header followed by a body of typed records:
//!
//! ```text
//! header: 0xA1 | type<<4 | (LL-1)<<2 | (CL-1) | body length (LL bytes) | cookie (CL bytes)
//! record: S(1 bit) size(3 bits) type(4 bits) | [length on `size` bytes if S] | value
//! ```
//!
//! Numbers are big-endian and written on as few bytes as possible. Strings
//! carry a terminating NUL that their length counts; bytes do not. Structs and
//! arrays are a start tag (`0x03`/`0x04`), their members, and an end tag with
//! S set and a zero size (`0x83`/`0x84`); a struct member is a name record
//! (type 5, like a string) followed by its value. Doubles travel as fixed
//! point: a 64-bit integer holding the value times 1000, and their size nibble
//! is the byte count itself (up to 8), never an S-marked length.
//!
//! Kamailio writes the arrays its RPCs build with `[` as structs whose members
//! have no names; [`decode_body`] turns such a struct into [`Value::Array`].

use std::fmt;

/// Byte 0 of every message: magic 0xA, protocol version 1.
const MAGIC_VERSION: u8 = 0xA1;

const T_INT: u8 = 0;
const T_STR: u8 = 1;
const T_DOUBLE: u8 = 2;
const T_STRUCT: u8 = 3;
const T_ARRAY: u8 = 4;
const T_AVP: u8 = 5;
const T_BYTES: u8 = 6;

/// The most records one body may hold. Each record decodes into a value of
/// about 56 bytes whatever its own size (one byte for an empty int), so
/// without a count a reply within the byte cap could cost fifty times its
/// size; at this budget the decoded values stay under ~20 MB. Kamailio's
/// largest replies the feeder reads (`dispatcher.list`, about 30 records per
/// destination) fit for ~8,000 destinations; beyond that the read-back check
/// is skipped, nothing else needs more.
pub const MAX_RECORDS: usize = 1 << 18;

/// The deepest nesting of structs and arrays accepted; Kamailio's replies
/// nest six deep at most.
pub const MAX_DEPTH: usize = 32;

/// The S bit of a record's first byte: a length field follows, or, with a
/// zero size, the record ends a struct or an array.
const S_BIT: u8 = 0x80;

/// What a message is; a fault's body is an int code and a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Request,
    Reply,
    Fault,
}

impl MessageType {
    fn code(self) -> u8 {
        match self {
            MessageType::Request => 0,
            MessageType::Reply => 1,
            MessageType::Fault => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(MessageType::Request),
            1 => Some(MessageType::Reply),
            3 => Some(MessageType::Fault),
            _ => None,
        }
    }
}

/// One binrpc value. Struct members keep their order and may repeat a name,
/// as `dispatcher.list` does with `SET` and `DEST`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i32),
    /// Decoded lossily: bytes that are not UTF-8 become U+FFFD.
    Str(String),
    /// Carried with three decimals of precision.
    Double(f64),
    Bytes(Vec<u8>),
    Struct(Vec<(String, Value)>),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_int(&self) -> Option<i32> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The members of a struct; an empty array counts as an empty struct,
    /// since the wire cannot tell them apart once Kamailio wrote them.
    pub fn members(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Struct(members) => Some(members),
            Value::Array(items) if items.is_empty() => Some(&[]),
            _ => None,
        }
    }

    /// The first member of a struct called `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.members()?
            .iter()
            .find_map(|(n, v)| (n == name).then_some(v))
    }

    fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "int",
            Value::Str(_) => "string",
            Value::Double(_) => "double",
            Value::Bytes(_) => "bytes",
            Value::Struct(_) => "struct",
            Value::Array(_) => "array",
        }
    }
}

impl fmt::Display for Value {
    /// A compact, JSON-like rendering for logs and error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Double(d) => write!(f, "{d}"),
            Value::Bytes(b) => write!(f, "<{} bytes>", b.len()),
            Value::Struct(members) => {
                f.write_str("{")?;
                for (i, (name, value)) in members.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{name}: {value}")?;
                }
                f.write_str("}")
            }
            Value::Array(items) => {
                f.write_str("[")?;
                for (i, value) in items.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{value}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// A message that cannot be encoded, or bytes that are not a binrpc message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("first byte {0:#04x} is not binrpc magic 0xA with version 1")]
    BadMagic(u8),
    #[error("message type {0} is not request (0), reply (1) or fault (3)")]
    BadMessageType(u8),
    #[error("the body ends inside a record at byte {offset}")]
    Truncated { offset: usize },
    #[error("bad record at byte {offset}: {reason}")]
    BadRecord { offset: usize, reason: &'static str },
    #[error("{count} bytes follow the announced end of the message")]
    TrailingBytes { count: usize },
    #[error("{what} of {len} bytes does not fit binrpc's 31-bit length")]
    TooLong { what: &'static str, len: usize },
    #[error("double {0} has no fixed-point representation")]
    BadDouble(String),
    #[error("the body holds more than {limit} records")]
    TooManyRecords { limit: usize },
    #[error("structs and arrays nest deeper than {limit} at byte {offset}")]
    TooDeep { offset: usize, limit: usize },
}

/// A parsed message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: MessageType,
    pub cookie: u32,
    /// Length of the body that follows the header.
    pub body_len: usize,
    /// Length of the header itself (4 to 10 bytes).
    pub header_len: usize,
}

impl Header {
    /// Parses the header at the start of `buf`; `Ok(None)` means more bytes
    /// are needed to know.
    pub fn parse(buf: &[u8]) -> Result<Option<Header>, CodecError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        if first != MAGIC_VERSION {
            return Err(CodecError::BadMagic(first));
        }
        let Some(&flags) = buf.get(1) else {
            return Ok(None);
        };
        let kind =
            MessageType::from_code(flags >> 4).ok_or(CodecError::BadMessageType(flags >> 4))?;
        let len_len = usize::from((flags >> 2) & 3) + 1;
        let cookie_len = usize::from(flags & 3) + 1;
        let header_len = 2 + len_len + cookie_len;
        if buf.len() < header_len {
            return Ok(None);
        }
        let body_len = read_be(&buf[2..2 + len_len]);
        let cookie = read_be(&buf[2 + len_len..header_len]);
        Ok(Some(Header {
            kind,
            // Lossless: at most 4 bytes were read.
            cookie: cookie as u32,
            body_len: body_len as usize,
            header_len,
        }))
    }
}

/// A whole decoded message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub kind: MessageType,
    pub cookie: u32,
    pub body: Vec<Value>,
}

impl Message {
    /// Encodes the header and body; fails only on values binrpc cannot carry
    /// (a string over 2 GiB, a non-finite double).
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut body = Vec::new();
        for value in &self.body {
            encode_value(&mut body, value)?;
        }
        let body_len = u32::try_from(body.len())
            .ok()
            .filter(|len| *len <= i32::MAX as u32)
            .ok_or(CodecError::TooLong {
                what: "a body",
                len: body.len(),
            })?;
        let len_bytes = minimal_be(u64::from(body_len), 1);
        let cookie_bytes = minimal_be(u64::from(self.cookie), 1);
        let mut out = Vec::with_capacity(2 + len_bytes.len() + cookie_bytes.len() + body.len());
        out.push(MAGIC_VERSION);
        // Both lengths are 1..=4, so each fits its two bits after the -1.
        out.push(
            (self.kind.code() << 4)
                | ((len_bytes.len() as u8 - 1) << 2)
                | (cookie_bytes.len() as u8 - 1),
        );
        out.extend_from_slice(&len_bytes);
        out.extend_from_slice(&cookie_bytes);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decodes exactly one message: `buf` must end where its header says.
    pub fn decode(buf: &[u8]) -> Result<Message, CodecError> {
        let header = Header::parse(buf)?.ok_or(CodecError::Truncated { offset: buf.len() })?;
        let end = header.header_len + header.body_len;
        if buf.len() < end {
            return Err(CodecError::Truncated { offset: buf.len() });
        }
        if buf.len() > end {
            return Err(CodecError::TrailingBytes {
                count: buf.len() - end,
            });
        }
        Ok(Message {
            kind: header.kind,
            cookie: header.cookie,
            body: decode_body(&buf[header.header_len..])?,
        })
    }
}

/// Reads a big-endian unsigned number of at most 8 bytes.
fn read_be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |acc, b| (acc << 8) | u64::from(*b))
}

/// `value` big-endian on as few bytes as possible, but at least `min`.
fn minimal_be(value: u64, min: usize) -> Vec<u8> {
    let significant = 8 - (value.leading_zeros() / 8) as usize;
    let len = significant.max(min);
    value.to_be_bytes()[8 - len..].to_vec()
}

/// Writes a record's first byte and, for lengths of 8 or more, its length
/// field.
fn encode_mark(
    out: &mut Vec<u8>,
    kind: u8,
    len: usize,
    what: &'static str,
) -> Result<(), CodecError> {
    if len < 8 {
        out.push(((len as u8) << 4) | kind);
        return Ok(());
    }
    let len32 = u32::try_from(len)
        .ok()
        .filter(|l| *l <= i32::MAX as u32)
        .ok_or(CodecError::TooLong { what, len })?;
    let bytes = minimal_be(u64::from(len32), 1);
    out.push(S_BIT | ((bytes.len() as u8) << 4) | kind);
    out.extend_from_slice(&bytes);
    Ok(())
}

fn encode_text(out: &mut Vec<u8>, kind: u8, text: &str) -> Result<(), CodecError> {
    encode_mark(out, kind, text.len() + 1, "a string")?;
    out.extend_from_slice(text.as_bytes());
    out.push(0);
    Ok(())
}

fn encode_value(out: &mut Vec<u8>, value: &Value) -> Result<(), CodecError> {
    match value {
        Value::Int(i) => {
            let bytes = minimal_be(u64::from(*i as u32), 0);
            out.push(((bytes.len() as u8) << 4) | T_INT);
            out.extend_from_slice(&bytes);
        }
        Value::Str(s) => encode_text(out, T_STR, s)?,
        Value::Double(d) => {
            let fixed = d * 1000.0;
            if !fixed.is_finite() || fixed.abs() >= i64::MAX as f64 {
                return Err(CodecError::BadDouble(d.to_string()));
            }
            let bytes = minimal_be(fixed.round() as i64 as u64, 0);
            out.push(((bytes.len() as u8) << 4) | T_DOUBLE);
            out.extend_from_slice(&bytes);
        }
        Value::Bytes(b) => {
            encode_mark(out, T_BYTES, b.len(), "a byte string")?;
            out.extend_from_slice(b);
        }
        Value::Struct(members) => {
            out.push(T_STRUCT);
            for (name, member) in members {
                encode_text(out, T_AVP, name)?;
                encode_value(out, member)?;
            }
            out.push(S_BIT | T_STRUCT);
        }
        Value::Array(items) => {
            out.push(T_ARRAY);
            for item in items {
                encode_value(out, item)?;
            }
            out.push(S_BIT | T_ARRAY);
        }
    }
    Ok(())
}

/// A struct or array being decoded; members without a name are bare values.
struct Frame {
    kind: u8,
    name: Option<String>,
    members: Vec<(Option<String>, Value)>,
}

impl Frame {
    fn finish(self) -> Value {
        let all_bare = self.members.iter().all(|(name, _)| name.is_none());
        if self.kind == T_ARRAY || (all_bare && !self.members.is_empty()) {
            Value::Array(self.members.into_iter().map(|(_, v)| v).collect())
        } else {
            // A bare value among named members (no Kamailio RPC writes one)
            // is kept under an empty name rather than dropped.
            Value::Struct(
                self.members
                    .into_iter()
                    .map(|(name, v)| (name.unwrap_or_default(), v))
                    .collect(),
            )
        }
    }
}

/// Decodes a message body into its top-level values, within a budget of
/// [`MAX_RECORDS`] records and [`MAX_DEPTH`] levels, so that what hostile
/// input costs is bounded by count as well as by size. Iterative, so that
/// no nesting can exhaust the stack.
pub fn decode_body(body: &[u8]) -> Result<Vec<Value>, CodecError> {
    let mut top = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    // A struct member's name, read and waiting for its value.
    let mut name: Option<(usize, String)> = None;
    let mut pos = 0;
    let mut records = 0;

    while pos < body.len() {
        let offset = pos;
        records += 1;
        if records > MAX_RECORDS {
            return Err(CodecError::TooManyRecords { limit: MAX_RECORDS });
        }
        let bad = |reason| CodecError::BadRecord { offset, reason };
        let first = body[pos];
        pos += 1;
        let kind = first & 0x0f;
        let size = usize::from(first >> 4);
        let (len, s_bit) = if kind != T_DOUBLE && size & 8 != 0 {
            let len_len = size & 7;
            let field = body
                .get(pos..pos + len_len)
                .ok_or(CodecError::Truncated { offset })?;
            pos += len_len;
            if len_len > 4 {
                return Err(bad("length field longer than 4 bytes"));
            }
            (read_be(field) as usize, true)
        } else {
            (size, false)
        };

        let value = match kind {
            T_STRUCT | T_ARRAY if s_bit => {
                if len != 0 {
                    return Err(bad("struct or array end tag with a length"));
                }
                if name.is_some() {
                    return Err(bad("struct member name without a value"));
                }
                let mut frame = stack
                    .pop()
                    .ok_or(bad("end tag outside a struct or array"))?;
                if frame.kind != kind {
                    return Err(bad("end tag does not match the open struct or array"));
                }
                let member = frame.name.take();
                let value = frame.finish();
                push_member(&mut stack, &mut top, member, value);
                continue;
            }
            T_STRUCT | T_ARRAY => {
                if len != 0 {
                    return Err(bad("struct or array start tag with a size"));
                }
                if stack.len() == MAX_DEPTH {
                    return Err(CodecError::TooDeep {
                        offset,
                        limit: MAX_DEPTH,
                    });
                }
                stack.push(Frame {
                    kind,
                    name: name.take().map(|(_, n)| n),
                    members: Vec::new(),
                });
                continue;
            }
            _ => {
                let bytes = body
                    .get(pos..pos + len)
                    .ok_or(CodecError::Truncated { offset })?;
                pos += len;
                match kind {
                    T_INT if len > 4 => return Err(bad("int longer than 4 bytes")),
                    // Two's complement: the u32 bit pattern is the C int.
                    T_INT => Value::Int(read_be(bytes) as u32 as i32),
                    T_DOUBLE if len > 8 => return Err(bad("double longer than 8 bytes")),
                    T_DOUBLE => Value::Double(read_be(bytes) as i64 as f64 / 1000.0),
                    T_STR => Value::Str(text(bytes)),
                    T_BYTES => Value::Bytes(bytes.to_vec()),
                    T_AVP => {
                        if stack.last().is_none_or(|f| f.kind != T_STRUCT) {
                            return Err(bad("struct member outside a struct"));
                        }
                        if name.is_some() {
                            return Err(bad("struct member name without a value"));
                        }
                        name = Some((offset, text(bytes)));
                        continue;
                    }
                    _ => return Err(bad("unknown record type")),
                }
            }
        };
        let member = name.take().map(|(_, n)| n);
        push_member(&mut stack, &mut top, member, value);
    }

    if let Some((offset, _)) = name {
        return Err(CodecError::BadRecord {
            offset,
            reason: "struct member name without a value",
        });
    }
    if !stack.is_empty() {
        return Err(CodecError::Truncated { offset: body.len() });
    }
    Ok(top)
}

fn push_member(stack: &mut [Frame], top: &mut Vec<Value>, name: Option<String>, value: Value) {
    match stack.last_mut() {
        Some(frame) => frame.members.push((name, value)),
        None => top.push(value),
    }
}

/// A string record's text without its terminating NUL.
fn text(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    String::from_utf8_lossy(bytes).into_owned()
}

/// Explains, for error messages, what a value was when another was expected.
pub(crate) fn describe(value: Option<&Value>) -> String {
    match value {
        None => "nothing".to_owned(),
        Some(v) => format!("{} {v}", v.type_name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_bytes(values: &[Value]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in values {
            encode_value(&mut out, v).unwrap();
        }
        out
    }

    fn roundtrip(values: Vec<Value>) {
        for kind in [MessageType::Request, MessageType::Reply, MessageType::Fault] {
            let msg = Message {
                kind,
                cookie: 0x1234_5678,
                body: values.clone(),
            };
            let bytes = msg.encode().unwrap();
            assert_eq!(Message::decode(&bytes).unwrap(), msg);
        }
    }

    #[test]
    fn examples_from_the_spec_comment() {
        assert_eq!(body_bytes(&[Value::Int(0x1234)]), [0x20, 0x12, 0x34]);
        assert_eq!(body_bytes(&[Value::Int(7)]), [0x10, 0x07]);
        assert_eq!(body_bytes(&[Value::Int(0)]), [0x00]);
        assert_eq!(
            body_bytes(&[Value::Str("abcdef".into())]),
            b"\x71abcdef\x00"
        );
        assert_eq!(
            body_bytes(&[Value::Str("abcdefhij".into())]),
            b"\x91\x0aabcdefhij\x00"
        );
        assert_eq!(body_bytes(&[Value::Str(String::new())]), [0x11, 0x00]);
        assert_eq!(
            body_bytes(&[Value::Bytes(b"abcdef".to_vec())]),
            b"\x66abcdef"
        );
        assert_eq!(
            body_bytes(&[Value::Array(vec![Value::Int(7), Value::Str("abc".into())])]),
            b"\x04\x10\x07\x41abc\x00\x84"
        );
        assert_eq!(
            body_bytes(&[Value::Struct(vec![
                ("intval".into(), Value::Int(3)),
                ("s".into(), Value::Str("abc".into())),
            ])]),
            b"\x03\x75intval\x00\x10\x03\x25s\x00\x41abc\x00\x83"
        );
    }

    #[test]
    fn suboptimal_encodings_from_the_spec_decode() {
        for bytes in [
            &[0x90, 0x02, 0x12, 0x34][..],
            &[0xA0, 0x00, 0x02, 0x12, 0x34],
        ] {
            assert_eq!(decode_body(bytes).unwrap(), [Value::Int(0x1234)]);
        }
        assert_eq!(decode_body(&[0x10, 0x00]).unwrap(), [Value::Int(0)]);
    }

    #[test]
    fn every_scalar_round_trips() {
        roundtrip(vec![
            Value::Int(0),
            Value::Int(1),
            Value::Int(-1),
            Value::Int(i32::MAX),
            Value::Int(i32::MIN),
            Value::Int(0x00ff_0000),
            Value::Str(String::new()),
            Value::Str("x".into()),
            Value::Str("exactly7".into()),
            Value::Str("sip:10.0.0.1:5060;transport=tcp".into()),
            Value::Str("ünïcödé".into()),
            Value::Double(0.0),
            Value::Double(1.5),
            Value::Double(-2.25),
            Value::Double(123456.789),
            Value::Bytes(Vec::new()),
            Value::Bytes(vec![0, 1, 2, 255]),
        ]);
        roundtrip(Vec::new());
    }

    #[test]
    fn nested_structs_and_arrays_round_trip() {
        let dest = |uri: &str| {
            Value::Struct(vec![
                ("URI".into(), Value::Str(uri.into())),
                ("FLAGS".into(), Value::Str("AP".into())),
                ("PRIORITY".into(), Value::Int(10)),
                (
                    "ATTRS".into(),
                    Value::Struct(vec![("BODY".into(), Value::Str("weight=50".into()))]),
                ),
            ])
        };
        roundtrip(vec![
            Value::Struct(vec![
                ("NRSETS".into(), Value::Int(2)),
                (
                    "RECORDS".into(),
                    Value::Struct(vec![
                        (
                            "SET".into(),
                            Value::Struct(vec![("ID".into(), Value::Int(1))]),
                        ),
                        (
                            "SET".into(),
                            Value::Struct(vec![
                                ("ID".into(), Value::Int(2)),
                                (
                                    "TARGETS".into(),
                                    Value::Struct(vec![
                                        ("DEST".into(), dest("sip:a")),
                                        ("DEST".into(), dest("sip:b")),
                                    ]),
                                ),
                            ]),
                        ),
                    ]),
                ),
                ("EMPTY".into(), Value::Struct(Vec::new())),
                (
                    "LIST".into(),
                    Value::Array(vec![Value::Int(1), Value::Array(vec![Value::Double(0.5)])]),
                ),
            ]),
            Value::Array(vec![
                Value::Struct(vec![("k".into(), Value::Bytes(b"v".to_vec()))]),
                Value::Str("after".into()),
            ]),
            Value::Int(42),
        ]);
    }

    #[test]
    fn kamailio_arrays_are_structs_with_bare_members() {
        // What ctl writes for rpc->add(ctx, "[", &h) followed by array_add "ds".
        let bytes = b"\x03\x10\x01\x41abc\x00\x83";
        assert_eq!(
            decode_body(bytes).unwrap(),
            [Value::Array(vec![Value::Int(1), Value::Str("abc".into())])]
        );
        assert_eq!(decode_body(b"\x03\x83").unwrap(), [Value::Struct(vec![])]);
    }

    #[test]
    fn long_strings_use_a_length_field_of_one_to_four_bytes() {
        for (len, len_len) in [
            (7, 0),
            (8, 1),
            (255, 1),
            (256, 2),
            (65_535, 2),
            (65_536, 3),
            (16_777_216, 4),
        ] {
            let s = "a".repeat(len - 1);
            let bytes = body_bytes(&[Value::Str(s.clone())]);
            if len_len == 0 {
                assert_eq!(bytes[0] >> 4, len as u8);
            } else {
                assert_eq!(bytes[0] >> 4, 8 | len_len, "len {len}");
            }
            assert_eq!(decode_body(&bytes).unwrap(), [Value::Str(s)]);
        }
    }

    #[test]
    fn big_bodies_use_a_body_length_of_one_to_four_bytes() {
        for (payload, len_len) in [
            (None, 1),
            (Some(200), 1),
            (Some(300), 2),
            (Some(70_000), 3),
            (Some(16_800_000), 4),
        ] {
            let msg = Message {
                kind: MessageType::Reply,
                cookie: 9,
                body: payload
                    .map(|n| Value::Bytes(vec![7; n]))
                    .into_iter()
                    .collect(),
            };
            let bytes = msg.encode().unwrap();
            let header = Header::parse(&bytes).unwrap().unwrap();
            assert_eq!(header.header_len, 2 + len_len + 1, "payload {payload:?}");
            assert_eq!(header.body_len, bytes.len() - header.header_len);
            assert_eq!(Message::decode(&bytes).unwrap(), msg);
        }
    }

    #[test]
    fn cookie_fields_are_one_to_four_bytes() {
        for (cookie, cookie_len) in [(0, 1), (0xff, 1), (0x100, 2), (0x1_0000, 3), (u32::MAX, 4)] {
            let msg = Message {
                kind: MessageType::Request,
                cookie,
                body: vec![Value::Str("core.version".into())],
            };
            let bytes = msg.encode().unwrap();
            assert_eq!(usize::from(bytes[1] & 3) + 1, cookie_len);
            let header = Header::parse(&bytes).unwrap().unwrap();
            assert_eq!(header.cookie, cookie);
            assert_eq!(header.kind, MessageType::Request);
            assert_eq!(Message::decode(&bytes).unwrap(), msg);
        }
    }

    #[test]
    fn a_request_matches_what_kamcmd_sends() {
        // kamcmd core.version with cookie 0x1c: header, then the method string.
        let msg = Message {
            kind: MessageType::Request,
            cookie: 0x1c,
            body: vec![Value::Str("core.version".into())],
        };
        assert_eq!(
            msg.encode().unwrap(),
            b"\xa1\x00\x0f\x1c\x91\x0dcore.version\x00"
        );
    }

    #[test]
    fn a_fault_matches_what_ctl_sends() {
        // _rpc_fault: int code, then the phrase with its NUL counted.
        let bytes = b"\xa1\x30\x14\x07\x20\x01\xf4\x91\x0fOngoing reload\x00";
        let msg = Message::decode(bytes).unwrap();
        assert_eq!(msg.kind, MessageType::Fault);
        assert_eq!(msg.cookie, 7);
        assert_eq!(
            msg.body,
            [Value::Int(500), Value::Str("Ongoing reload".into())]
        );
    }

    #[test]
    fn header_parse_asks_for_more_bytes_until_complete() {
        let bytes = Message {
            kind: MessageType::Reply,
            cookie: 0xABCDEF,
            body: vec![Value::Str("x".repeat(300))],
        }
        .encode()
        .unwrap();
        for cut in 0..7 {
            assert_eq!(Header::parse(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
        let header = Header::parse(&bytes[..7]).unwrap().unwrap();
        assert_eq!(header.header_len, 7);
        assert_eq!(header.body_len, bytes.len() - 7);
    }

    #[test]
    fn truncated_input_is_an_error_at_every_cut() {
        let msg = Message {
            kind: MessageType::Reply,
            cookie: 77,
            body: vec![Value::Struct(vec![
                ("a".into(), Value::Int(-5)),
                (
                    "b".into(),
                    Value::Array(vec![Value::Str("long string here".into())]),
                ),
                ("c".into(), Value::Double(-1.5)),
                ("d".into(), Value::Bytes(vec![1, 2, 3])),
            ])],
        };
        let bytes = msg.encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(Message::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let header_len = Header::parse(&bytes).unwrap().unwrap().header_len;
        let body = &bytes[header_len..];
        for cut in 1..body.len() {
            assert!(decode_body(&body[..cut]).is_err(), "body cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            Message::decode(&longer),
            Err(CodecError::TrailingBytes { count: 1 })
        );
    }

    #[test]
    fn malformed_records_are_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"\x83", "end tag outside"),
            (b"\x84", "end tag outside"),
            (b"\x03\x84", "does not match"),
            (b"\x25a\x00\x10\x01", "outside a struct"),
            (b"\x04\x25a\x00\x10\x01\x84", "outside a struct"),
            (b"\x03\x25a\x00\x83", "without a value"),
            (b"\x03\x25a\x00\x25b\x00\x10\x01\x83", "without a value"),
            (b"\x07", "unknown record type"),
            (b"\x0f", "unknown record type"),
            (b"\x50\x01\x02\x03\x04\x05", "int longer"),
            (b"\x92\x00\x00\x00\x00\x00\x00\x00\x00\x01", "double longer"),
            (b"\xd1\x00\x00\x00\x00\x00", "length field longer"),
            (b"\x13\x00", "start tag with a size"),
            (b"\x93\x01", "end tag with a length"),
        ];
        for (bytes, reason) in cases {
            let err = decode_body(bytes).unwrap_err().to_string();
            assert!(err.contains(reason), "{bytes:02x?}: {err}");
        }
        assert!(matches!(
            decode_body(b"\x03\x03\x83"),
            Err(CodecError::Truncated { .. })
        ));
        assert_eq!(Header::parse(b"\xa2\x00"), Err(CodecError::BadMagic(0xa2)));
        assert_eq!(
            Header::parse(b"\xa1\x20\x00\x00"),
            Err(CodecError::BadMessageType(2))
        );
    }

    #[test]
    fn garbage_never_panics() {
        // A deterministic xorshift stream: every byte pattern class shows up.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = decode_body(&buf);
            if !buf.is_empty() {
                buf[0] = MAGIC_VERSION;
            }
            let _ = Message::decode(&buf);
        }
        // Deep nesting does not recurse.
        let deep = vec![T_STRUCT; 1_000_000];
        assert!(decode_body(&deep).is_err());
    }

    #[test]
    fn bodies_have_a_budget_in_records_and_depth() {
        // One-byte records (an int of size 0): each would be a whole value.
        let ints = vec![T_INT; MAX_RECORDS + 1];
        assert_eq!(
            decode_body(&ints),
            Err(CodecError::TooManyRecords { limit: MAX_RECORDS })
        );
        assert_eq!(
            decode_body(&ints[..MAX_RECORDS]).unwrap().len(),
            MAX_RECORDS
        );
        let deep = [
            vec![T_ARRAY; MAX_DEPTH + 1],
            vec![S_BIT | T_ARRAY; MAX_DEPTH + 1],
        ]
        .concat();
        assert!(matches!(
            decode_body(&deep),
            Err(CodecError::TooDeep {
                limit: MAX_DEPTH,
                ..
            })
        ));
        let ok = [vec![T_ARRAY; MAX_DEPTH], vec![S_BIT | T_ARRAY; MAX_DEPTH]].concat();
        assert_eq!(decode_body(&ok).unwrap().len(), 1);
        // 1,000,000 start tags used to stack 1,000,000 frames.
        assert!(matches!(
            decode_body(&vec![T_STRUCT; 1_000_000]),
            Err(CodecError::TooDeep { .. })
        ));
    }

    #[test]
    fn unencodable_values_are_errors() {
        for d in [f64::NAN, f64::INFINITY, 1e300] {
            let msg = Message {
                kind: MessageType::Request,
                cookie: 1,
                body: vec![Value::Double(d)],
            };
            assert!(matches!(msg.encode(), Err(CodecError::BadDouble(_))));
        }
    }
}
