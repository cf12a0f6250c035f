//! The record: one message as stored in Redis, byte for byte what Redis's Lua
//! `cmsgpack.pack` makes of `{id, body, tag, key, headers, created, attempt, offset,
//! deliveries, error, consumer}` (see docs/storage.md). Both editions read and write it.

use std::borrow::Cow;
use std::ops::Range;

use rmp::encode;

/// Number of fields a record has in this version; readers accept more (later versions append).
const FIELDS: u32 = 11;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// The producer's id; empty when the server made it (see [`Record::message_id`]).
    pub id: Vec<u8>,
    pub body: Vec<u8>,
    pub tag: Vec<u8>,
    pub key: Vec<u8>,
    /// In the order given at PUSH.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Unix ms of the push.
    pub created: u64,
    /// Deliveries counted towards max-attempts (RECOVER resets it).
    pub attempt: u64,
    /// Per-queue sequence number, unique within the queue.
    pub offset: u64,
    /// Every delivery adds 1 and nothing resets it: receipts are `<offset>-<deliveries>`.
    pub deliveries: u64,
    /// The last reason given (NACK REASON, "max attempts", …), empty when none.
    pub error: Vec<u8>,
    /// CONSUMER of the current delivery while in flight.
    pub consumer: Vec<u8>,
    /// Fields a later version appended, kept as they were (count, raw MessagePack bytes),
    /// so an older reader never drops them.
    pub extra: (u32, Vec<u8>),
}

#[derive(Debug, PartialEq, Eq)]
pub struct CorruptRecord;

impl Record {
    /// The id users see: the producer's, or `<created>-<offset>` when the server made it.
    pub fn message_id(&self) -> Cow<'_, [u8]> {
        if self.id.is_empty() {
            Cow::Owned(pair(self.created, self.offset))
        } else {
            Cow::Borrowed(&self.id)
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            24 + self.id.len() + self.body.len() + self.tag.len() + self.key.len() + self.error.len() + self.consumer.len(),
        );
        // Writing into a Vec cannot fail.
        encode::write_array_len(&mut out, FIELDS + self.extra.0).unwrap();
        write_bytes(&mut out, &self.id);
        write_bytes(&mut out, &self.body);
        write_bytes(&mut out, &self.tag);
        write_bytes(&mut out, &self.key);
        encode::write_array_len(&mut out, (self.headers.len() * 2) as u32).unwrap();
        for (name, value) in &self.headers {
            write_bytes(&mut out, name);
            write_bytes(&mut out, value);
        }
        encode::write_uint(&mut out, self.created).unwrap();
        encode::write_uint(&mut out, self.attempt).unwrap();
        encode::write_uint(&mut out, self.offset).unwrap();
        encode::write_uint(&mut out, self.deliveries).unwrap();
        write_bytes(&mut out, &self.error);
        write_bytes(&mut out, &self.consumer);
        out.extend_from_slice(&self.extra.1);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, CorruptRecord> {
        let mut r = Reader { buf: bytes, pos: 0 };
        let n = r.array_len()?;
        if n < FIELDS {
            return Err(CorruptRecord);
        }
        let id = r.bytes()?;
        let body = r.bytes()?;
        let tag = r.bytes()?;
        let key = r.bytes()?;
        let hn = r.array_len()?;
        if hn % 2 != 0 {
            return Err(CorruptRecord);
        }
        let mut headers = Vec::with_capacity(hn as usize / 2);
        for _ in 0..hn / 2 {
            let name = r.bytes()?;
            let value = r.bytes()?;
            headers.push((name, value));
        }
        let rec = Record {
            id,
            body,
            tag,
            key,
            headers,
            created: r.uint()?,
            attempt: r.uint()?,
            offset: r.uint()?,
            deliveries: r.uint()?,
            error: r.bytes()?,
            consumer: r.bytes()?,
            extra: (0, Vec::new()),
        };
        let start = r.pos;
        for _ in FIELDS..n {
            r.skip(0)?;
        }
        if r.pos != bytes.len() {
            return Err(CorruptRecord);
        }
        Ok(Record { extra: (n - FIELDS, bytes[start..].to_vec()), ..rec })
    }
}

/// Where each field of an encoded record lies: FETCH reads the message from the bytes and
/// rewrites only the delivery fields, instead of decoding and re-encoding the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub id: Range<usize>,
    pub body: Range<usize>,
    pub tag: Range<usize>,
    pub key: Range<usize>,
    pub headers: Vec<(Range<usize>, Range<usize>)>,
    pub created: u64,
    pub attempt: u64,
    pub offset: u64,
    pub deliveries: u64,
    /// The encoded attempt, the encoded deliveries, and the encoded consumer (header included).
    attempt_at: Range<usize>,
    deliveries_at: Range<usize>,
    consumer_at: Range<usize>,
}

impl Layout {
    /// Checks the whole record, as [`Record::decode`] does, without copying anything.
    pub fn of(bytes: &[u8]) -> Result<Layout, CorruptRecord> {
        let mut r = Reader { buf: bytes, pos: 0 };
        let n = r.array_len()?;
        if n < FIELDS {
            return Err(CorruptRecord);
        }
        let (id, body, tag, key) = (r.span()?, r.span()?, r.span()?, r.span()?);
        let hn = r.array_len()?;
        if hn % 2 != 0 {
            return Err(CorruptRecord);
        }
        let mut headers = Vec::with_capacity(hn as usize / 2);
        for _ in 0..hn / 2 {
            headers.push((r.span()?, r.span()?));
        }
        let created = r.uint()?;
        let start = r.pos;
        let attempt = r.uint()?;
        let attempt_at = start..r.pos;
        let offset = r.uint()?;
        let start = r.pos;
        let deliveries = r.uint()?;
        let deliveries_at = start..r.pos;
        r.span()?;
        let start = r.pos;
        r.span()?;
        let consumer_at = start..r.pos;
        for _ in FIELDS..n {
            r.skip(0)?;
        }
        if r.pos != bytes.len() {
            return Err(CorruptRecord);
        }
        Ok(Layout { id, body, tag, key, headers, created, attempt, offset, deliveries, attempt_at, deliveries_at, consumer_at })
    }

    /// The message id (the producer's, or `<created>-<offset>`).
    pub fn message_id<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        if self.id.is_empty() {
            Cow::Owned(pair(self.created, self.offset))
        } else {
            Cow::Borrowed(&bytes[self.id.clone()])
        }
    }
}

/// How many random bytes a receipt carries.
pub const NONCE_LEN: usize = 6;

/// The receipt of one delivery: `<offset>-<deliveries>-<nonce>`, the nonce in hex. Offset and
/// deliveries make it unique within the queue's history; the random nonce makes it unique
/// across queues and across histories (a failover that lost writes re-issues the same offset
/// and delivery count, never the same nonce). Clients treat it as opaque.
pub fn receipt(offset: u64, deliveries: u64, nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = pair(offset, deliveries);
    out.push(b'-');
    for b in nonce {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
    out
}

/// The id of an encoded record, as stored: the producer's, or the parts of a server-made one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdView<'a> {
    Given(&'a [u8]),
    /// `<created>-<offset>`.
    Made(u64, u64),
}

impl IdView<'_> {
    /// The id users see.
    pub fn to_bytes(self) -> Vec<u8> {
        match self {
            IdView::Given(id) => id.to_vec(),
            IdView::Made(created, offset) => pair(created, offset),
        }
    }
}

/// The id of an encoded record, reading no more than it needs and copying nothing. The rest
/// of the record is not checked (decode it to use it).
pub fn id_of(bytes: &[u8]) -> Result<IdView<'_>, CorruptRecord> {
    let mut r = Reader { buf: bytes, pos: 0 };
    if r.array_len()? < FIELDS {
        return Err(CorruptRecord);
    }
    let id = r.span()?;
    if !id.is_empty() {
        return Ok(IdView::Given(&bytes[id]));
    }
    for _ in 0..3 {
        r.span()?; // body, tag, key
    }
    let hn = r.array_len()?;
    for _ in 0..hn {
        r.span()?;
    }
    let created = r.uint()?;
    r.uint()?; // attempt
    Ok(IdView::Made(created, r.uint()?))
}

/// The message id of an encoded record: the producer's, or `<created>-<offset>`.
pub fn message_id_of(bytes: &[u8]) -> Result<Vec<u8>, CorruptRecord> {
    id_of(bytes).map(IdView::to_bytes)
}

/// Parses a server-made id, `<created>-<offset>` in plain decimal as the server writes it.
pub fn parse_made_id(id: &[u8]) -> Option<(u64, u64)> {
    let dash = id.iter().position(|b| *b == b'-')?;
    let num = |s: &[u8]| -> Option<u64> {
        if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) || (s.len() > 1 && s[0] == b'0') {
            return None;
        }
        std::str::from_utf8(s).ok()?.parse().ok()
    };
    Some((num(&id[..dash])?, num(&id[dash + 1..])?))
}

/// The record of the next delivery of `bytes`: attempt and deliveries one more, consumer
/// set; every other byte as it was. Gives the new bytes and their layout.
pub fn redeliver(bytes: &[u8], consumer: &[u8]) -> Result<(Vec<u8>, Layout), CorruptRecord> {
    let old = Layout::of(bytes)?;
    let mut out = Vec::with_capacity(bytes.len() + consumer.len() + 8);
    // Each rewritten field's new place is noted as it is written: the new layout is the old
    // one with those three places (the record is not read a second time, nor its headers).
    out.extend_from_slice(&bytes[..old.attempt_at.start]);
    let start = out.len();
    encode::write_uint(&mut out, old.attempt + 1).unwrap();
    let attempt_at = start..out.len();
    out.extend_from_slice(&bytes[old.attempt_at.end..old.deliveries_at.start]);
    let start = out.len();
    encode::write_uint(&mut out, old.deliveries + 1).unwrap();
    let deliveries_at = start..out.len();
    out.extend_from_slice(&bytes[old.deliveries_at.end..old.consumer_at.start]);
    let start = out.len();
    write_bytes(&mut out, consumer);
    let consumer_at = start..out.len();
    out.extend_from_slice(&bytes[old.consumer_at.end..]);
    let layout = Layout { attempt: old.attempt + 1, deliveries: old.deliveries + 1, attempt_at, deliveries_at, consumer_at, ..old };
    Ok((out, layout))
}

/// `a-b` in decimal (on the hot path: no formatter).
fn pair(a: u64, b: u64) -> Vec<u8> {
    let mut buf = itoa::Buffer::new();
    let mut out = Vec::with_capacity(40);
    out.extend_from_slice(buf.format(a).as_bytes());
    out.push(b'-');
    out.extend_from_slice(buf.format(b).as_bytes());
    out
}

fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // cmsgpack writes Lua strings as msgpack str (fixstr, str8, str16, str32), raw bytes.
    encode::write_str_len(out, b.len() as u32).unwrap();
    out.extend_from_slice(b);
}

/// A minimal MessagePack reader for exactly the shapes a record uses.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, CorruptRecord> {
        let b = *self.buf.get(self.pos).ok_or(CorruptRecord)?;
        self.pos += 1;
        Ok(b)
    }

    fn be(&mut self, n: usize) -> Result<u64, CorruptRecord> {
        let s = self.buf.get(self.pos..self.pos + n).ok_or(CorruptRecord)?;
        self.pos += n;
        Ok(s.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64))
    }

    fn array_len(&mut self) -> Result<u32, CorruptRecord> {
        match self.byte()? {
            b @ 0x90..=0x9f => Ok((b & 0x0f) as u32),
            0xdc => Ok(self.be(2)? as u32),
            0xdd => Ok(self.be(4)? as u32),
            _ => Err(CorruptRecord),
        }
    }

    fn bytes(&mut self) -> Result<Vec<u8>, CorruptRecord> {
        let span = self.span()?;
        Ok(self.buf[span].to_vec())
    }

    /// Where a string's content lies.
    fn span(&mut self) -> Result<Range<usize>, CorruptRecord> {
        let len = match self.byte()? {
            b @ 0xa0..=0xbf => (b & 0x1f) as usize,
            0xd9 | 0xc4 => self.be(1)? as usize,
            0xda | 0xc5 => self.be(2)? as usize,
            0xdb | 0xc6 => self.be(4)? as usize,
            _ => return Err(CorruptRecord),
        };
        let start = self.pos;
        self.buf.get(start..start + len).ok_or(CorruptRecord)?;
        self.pos += len;
        Ok(start..start + len)
    }

    /// Steps over any one value (for fields this version does not know).
    fn skip(&mut self, depth: usize) -> Result<(), CorruptRecord> {
        if depth > 32 {
            return Err(CorruptRecord);
        }
        let b = self.byte()?;
        let (len, items) = match b {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * (b & 0x0f) as u64),
            0x90..=0x9f => (0, (b & 0x0f) as u64),
            0xa0..=0xbf => ((b & 0x1f) as u64, 0),
            0xc4 | 0xd9 => (self.be(1)?, 0),
            0xc5 | 0xda => (self.be(2)?, 0),
            0xc6 | 0xdb => (self.be(4)?, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xca | 0xce | 0xd2 => (4, 0),
            0xcb | 0xcf | 0xd3 => (8, 0),
            0xdc => (0, self.be(2)?),
            0xdd => (0, self.be(4)?),
            0xde => (0, 2 * self.be(2)?),
            0xdf => (0, 2 * self.be(4)?),
            _ => return Err(CorruptRecord),
        };
        self.pos = self.pos.checked_add(len as usize).filter(|p| *p <= self.buf.len()).ok_or(CorruptRecord)?;
        for _ in 0..items {
            self.skip(depth + 1)?;
        }
        Ok(())
    }

    fn uint(&mut self) -> Result<u64, CorruptRecord> {
        match self.byte()? {
            b @ 0x00..=0x7f => Ok(b as u64),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            // Lua may hand back an integral double; accept it when exact.
            0xcb => {
                let f = f64::from_bits(self.be(8)?);
                if f >= 0.0 && f.fract() == 0.0 && f < 9.007_199_254_740_992e15 {
                    Ok(f as u64)
                } else {
                    Err(CorruptRecord)
                }
            }
            _ => Err(CorruptRecord),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            id: b"".to_vec(),
            body: b"0123456789abcdef".to_vec(),
            tag: b"t".to_vec(),
            key: Vec::new(),
            headers: vec![(b"a".to_vec(), b"b".to_vec())],
            created: 1_765_000_000_000,
            attempt: 200,
            offset: 70_000,
            deliveries: 1,
            error: Vec::new(),
            consumer: Vec::new(),
            extra: (0, Vec::new()),
        }
    }

    #[test]
    fn encoding_matches_redis_cmsgpack() {
        // Bytes produced by Redis 7.0's cmsgpack.pack for the same Lua table.
        let mut want = vec![0x9b, 0xa0, 0xb0];
        want.extend_from_slice(b"0123456789abcdef");
        want.extend_from_slice(&[0xa1, b't', 0xa0, 0x92, 0xa1, b'a', 0xa1, b'b']);
        want.extend_from_slice(&[0xcf, 0x00, 0x00, 0x01, 0x9a, 0xf2, 0x32, 0xb2, 0x00]);
        want.extend_from_slice(&[0xcc, 200, 0xce, 0x00, 0x01, 0x11, 0x70, 0x01, 0xa0, 0xa0]);
        assert_eq!(sample().encode(), want);
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let mut r = sample();
        r.body = vec![0u8, 255, 10, 13];
        r.body.extend(std::iter::repeat_n(b'x', 70_000));
        r.error = b"boom".to_vec();
        r.consumer = b"w1".to_vec();
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn fields_of_a_later_version_are_kept() {
        let mut bytes = sample().encode();
        bytes[0] = 0x9d;
        bytes.extend_from_slice(&[0xa3, b'n', b'e', b'w', 0x92, 0x01, 0xc0]);
        let r = Record::decode(&bytes).unwrap();
        assert_eq!(r.body, sample().body);
        assert_eq!(r.encode(), bytes);
    }

    #[test]
    fn redelivery_rewrites_only_the_delivery_fields() {
        let mut r = sample();
        r.attempt = 127; // 1 byte, becomes 2 (0xcc 128)
        r.consumer = b"old".to_vec();
        let (bytes, layout) = redeliver(&r.encode(), b"worker-7").unwrap();
        let want = Record { attempt: 128, deliveries: 2, consumer: b"worker-7".to_vec(), ..r.clone() };
        assert_eq!(bytes, want.encode());
        assert_eq!(&bytes[layout.body.clone()], r.body.as_slice());
        assert_eq!((layout.attempt, layout.deliveries, layout.offset), (128, 2, r.offset));
        assert_eq!(layout.message_id(&bytes), want.message_id());
    }

    #[test]
    fn a_redelivered_layout_is_the_one_its_bytes_have() {
        // Fields that change width (127 -> 128, 255 -> 256, 65535 -> 65536), a consumer that
        // grows and one that shrinks to nothing, headers, and fields of a later version after
        // the consumer: the layout redeliver gives is what reading the new bytes gives.
        for (attempt, deliveries, old_consumer, consumer) in
            [(0, 0, &b""[..], &b"c"[..]), (127, 255, b"old", b"worker-7"), (65_535, 127, b"a-long-consumer-name", b"")]
        {
            let mut r = sample();
            (r.attempt, r.deliveries, r.consumer) = (attempt, deliveries, old_consumer.to_vec());
            r.headers = vec![(b"h1".to_vec(), b"v1".to_vec()), (b"h2".to_vec(), vec![b'x'; 300])];
            let mut bytes = r.encode();
            bytes[0] = 0x9d;
            bytes.extend_from_slice(&[0xa3, b'n', b'e', b'w', 0x92, 0x01, 0xc0]);
            let (out, layout) = redeliver(&bytes, consumer).unwrap();
            assert_eq!(layout, Layout::of(&out).unwrap(), "attempt {attempt}, deliveries {deliveries}");
            assert_eq!(Record::decode(&out).unwrap().consumer, consumer);
        }
    }

    #[test]
    fn truncated_or_garbage_bytes_are_refused() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert_eq!(Record::decode(&bytes[..cut]), Err(CorruptRecord));
            assert!(Layout::of(&bytes[..cut]).is_err());
        }
        assert_eq!(Record::decode(b"hello"), Err(CorruptRecord));
    }

    #[test]
    fn server_made_id_is_created_dash_offset() {
        assert_eq!(&*sample().message_id(), b"1765000000000-70000");
        assert_eq!(message_id_of(&sample().encode()).unwrap(), b"1765000000000-70000".to_vec());
        let mut given = sample();
        given.id = b"order-42".to_vec();
        assert_eq!(message_id_of(&given.encode()).unwrap(), b"order-42".to_vec());
    }

    #[test]
    fn receipts_carry_the_delivery_and_a_hex_nonce() {
        assert_eq!(receipt(70_000, 3, &[0, 1, 0xab, 0xff, 0x10, 0x09]), b"70000-3-0001abff1009".to_vec());
    }
}
