//! BER encoding and decoding of SNMP messages (RFC 3416 PDUs, RFC 3412 v3 headers): the
//! few types SNMP uses, written so that a v3 message can be authenticated in place (the
//! encoder reports where the authentication parameters sit).
//!
//! Decoding never panics and never trusts a length: every read is bounded by its parent.

/// An SNMP value (RFC 2578 application types and the RFC 3416 exceptions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    Int(i64),
    Str(Vec<u8>),
    Oid(Vec<u32>),
    Null,
    IpAddress([u8; 4]),
    Counter32(u32),
    Gauge32(u32),
    TimeTicks(u32),
    Counter64(u64),
    NoSuchObject,
    NoSuchInstance,
    EndOfMibView,
}

/// A variable binding.
pub type VarBind = (Vec<u32>, Val);

pub const SEQUENCE: u8 = 0x30;
pub const INTEGER: u8 = 0x02;
pub const OCTET_STRING: u8 = 0x04;
pub const NULL: u8 = 0x05;
pub const OBJECT_ID: u8 = 0x06;

/// PDU tags (RFC 3416).
pub const GET: u8 = 0xA0;
pub const GET_NEXT: u8 = 0xA1;
pub const RESPONSE: u8 = 0xA2;
pub const GET_BULK: u8 = 0xA5;
pub const INFORM: u8 = 0xA6;
pub const TRAP_V2: u8 = 0xA7;
pub const REPORT: u8 = 0xA8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BerError {
    #[error("message cut short")]
    Truncated,
    #[error("unexpected tag 0x{found:02x} where 0x{expected:02x} was expected")]
    Tag { expected: u8, found: u8 },
    #[error("malformed {0}")]
    Malformed(&'static str),
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Tag, length and content.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    push_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// Length of the tag and length octets of a TLV with `content_len` bytes of content.
pub fn header_len(content_len: usize) -> usize {
    let mut v = Vec::new();
    push_len(&mut v, content_len);
    1 + v.len()
}

fn int_content(v: i64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    bytes[start..].to_vec()
}

fn uint_content(v: u64) -> Vec<u8> {
    let mut c = v.to_be_bytes().to_vec();
    while c.len() > 1 && c[0] == 0 && c[1] & 0x80 == 0 {
        c.remove(0);
    }
    if c[0] & 0x80 != 0 {
        c.insert(0, 0);
    }
    c
}

pub fn int(v: i64) -> Vec<u8> {
    tlv(INTEGER, &int_content(v))
}

pub fn octets(v: &[u8]) -> Vec<u8> {
    tlv(OCTET_STRING, v)
}

pub fn oid(arcs: &[u32]) -> Vec<u8> {
    let mut c = Vec::new();
    let (first, rest) = match arcs {
        [a, b, rest @ ..] => (u64::from(*a) * 40 + u64::from(*b), rest),
        [a] => (u64::from(*a) * 40, &[][..]),
        [] => (0, &[][..]),
    };
    for arc in std::iter::once(first).chain(rest.iter().map(|&a| u64::from(a))) {
        let mut groups = vec![(arc & 0x7f) as u8];
        let mut v = arc >> 7;
        while v > 0 {
            groups.push(0x80 | (v & 0x7f) as u8);
            v >>= 7;
        }
        c.extend(groups.iter().rev());
    }
    tlv(OBJECT_ID, &c)
}

pub fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(SEQUENCE, &parts.concat())
}

pub fn value(v: &Val) -> Vec<u8> {
    match v {
        Val::Int(i) => int(*i),
        Val::Str(s) => octets(s),
        Val::Oid(o) => oid(o),
        Val::Null => tlv(NULL, &[]),
        Val::IpAddress(a) => tlv(0x40, a),
        Val::Counter32(n) => tlv(0x41, &uint_content((*n).into())),
        Val::Gauge32(n) => tlv(0x42, &uint_content((*n).into())),
        Val::TimeTicks(n) => tlv(0x43, &uint_content((*n).into())),
        Val::Counter64(n) => tlv(0x46, &uint_content(*n)),
        Val::NoSuchObject => tlv(0x80, &[]),
        Val::NoSuchInstance => tlv(0x81, &[]),
        Val::EndOfMibView => tlv(0x82, &[]),
    }
}

pub fn varbinds(vbs: &[VarBind]) -> Vec<u8> {
    let items: Vec<Vec<u8>> = vbs
        .iter()
        .map(|(o, v)| seq(&[&oid(o), &value(v)]))
        .collect();
    tlv(SEQUENCE, &items.concat())
}

/// A PDU: request id, error status, error index, varbinds.
pub fn pdu(tag: u8, request_id: i32, vbs: &[VarBind]) -> Vec<u8> {
    tlv(
        tag,
        &[int(request_id.into()), int(0), int(0), varbinds(vbs)].concat(),
    )
}

/// Reads TLVs from a slice.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Where the next TLV starts within the slice given to `new`.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The next TLV: (tag, content, offset of the content in the slice).
    pub fn next_tlv(&mut self) -> Result<(u8, &'a [u8], usize), BerError> {
        let b = self.buf;
        let tag = *b.get(self.pos).ok_or(BerError::Truncated)?;
        let first = *b.get(self.pos + 1).ok_or(BerError::Truncated)?;
        let mut at = self.pos + 2;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return Err(BerError::Malformed("length"));
            }
            let bytes = b.get(at..at + n).ok_or(BerError::Truncated)?;
            at += n;
            bytes
                .iter()
                .fold(0usize, |acc, &x| (acc << 8) | usize::from(x))
        };
        let content = b.get(at..at + len).ok_or(BerError::Truncated)?;
        self.pos = at + len;
        Ok((tag, content, at))
    }

    pub fn expect(&mut self, tag: u8) -> Result<&'a [u8], BerError> {
        let (found, content, _) = self.next_tlv()?;
        if found != tag {
            return Err(BerError::Tag {
                expected: tag,
                found,
            });
        }
        Ok(content)
    }

    pub fn int(&mut self) -> Result<i64, BerError> {
        let c = self.expect(INTEGER)?;
        decode_int(c)
    }

    pub fn octets(&mut self) -> Result<&'a [u8], BerError> {
        self.expect(OCTET_STRING)
    }

    pub fn seq(&mut self) -> Result<Reader<'a>, BerError> {
        Ok(Reader::new(self.expect(SEQUENCE)?))
    }

    pub fn oid(&mut self) -> Result<Vec<u32>, BerError> {
        decode_oid(self.expect(OBJECT_ID)?)
    }

    pub fn value(&mut self) -> Result<Val, BerError> {
        let (tag, c, _) = self.next_tlv()?;
        let uint = |c: &[u8]| -> Result<u64, BerError> {
            if c.is_empty() || c.len() > 9 {
                return Err(BerError::Malformed("unsigned"));
            }
            Ok(c.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
        };
        let u32_of = |c: &[u8]| -> Result<u32, BerError> {
            u32::try_from(uint(c)?).map_err(|_| BerError::Malformed("32-bit value"))
        };
        Ok(match tag {
            INTEGER => Val::Int(decode_int(c)?),
            OCTET_STRING => Val::Str(c.to_vec()),
            OBJECT_ID => Val::Oid(decode_oid(c)?),
            NULL => Val::Null,
            0x40 => Val::IpAddress(c.try_into().map_err(|_| BerError::Malformed("IpAddress"))?),
            0x41 => Val::Counter32(u32_of(c)?),
            0x42 => Val::Gauge32(u32_of(c)?),
            0x43 => Val::TimeTicks(u32_of(c)?),
            0x46 => Val::Counter64(uint(c)?),
            0x80 => Val::NoSuchObject,
            0x81 => Val::NoSuchInstance,
            0x82 => Val::EndOfMibView,
            _ => return Err(BerError::Malformed("value type")),
        })
    }

    pub fn varbinds(&mut self) -> Result<Vec<VarBind>, BerError> {
        let mut list = self.seq()?;
        let mut out = Vec::new();
        while !list.is_empty() {
            let mut vb = list.seq()?;
            out.push((vb.oid()?, vb.value()?));
        }
        Ok(out)
    }
}

fn decode_int(c: &[u8]) -> Result<i64, BerError> {
    if c.is_empty() || c.len() > 8 {
        return Err(BerError::Malformed("integer"));
    }
    let neg = c[0] & 0x80 != 0;
    Ok(c.iter().fold(if neg { -1i64 } else { 0 }, |acc, &x| {
        (acc << 8) | i64::from(x)
    }))
}

fn decode_oid(c: &[u8]) -> Result<Vec<u32>, BerError> {
    let mut arcs = Vec::new();
    let mut v: u64 = 0;
    for (i, &b) in c.iter().enumerate() {
        v = (v << 7) | u64::from(b & 0x7f);
        if v > u64::from(u32::MAX) * 40 + 39 {
            return Err(BerError::Malformed("object identifier"));
        }
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (v / 40).min(2);
                arcs.push(first as u32);
                arcs.push(
                    u32::try_from(v - first * 40)
                        .map_err(|_| BerError::Malformed("object identifier"))?,
                );
            } else {
                arcs.push(u32::try_from(v).map_err(|_| BerError::Malformed("object identifier"))?);
            }
            v = 0;
        } else if i == c.len() - 1 {
            return Err(BerError::Malformed("object identifier"));
        }
    }
    Ok(arcs)
}

/// A decoded PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    pub tag: u8,
    pub request_id: i32,
    pub error_status: i64,
    pub varbinds: Vec<VarBind>,
}

pub fn decode_pdu(bytes: &[u8]) -> Result<Pdu, BerError> {
    let mut r = Reader::new(bytes);
    let (tag, content, _) = r.next_tlv()?;
    let mut p = Reader::new(content);
    let request_id = i32::try_from(p.int()?).map_err(|_| BerError::Malformed("request id"))?;
    let error_status = p.int()?;
    p.int()?;
    Ok(Pdu {
        tag,
        request_id,
        error_status,
        varbinds: p.varbinds()?,
    })
}

/// `s` cut at a character boundary within `max` bytes (a DisplayString of SIZE (0..max)).
pub fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let vbs: Vec<VarBind> = vec![
            (vec![1, 3, 6, 1, 2, 1, 1, 3, 0], Val::TimeTicks(123_456)),
            (vec![1, 3, 6, 1, 4, 1, 99847, 0, 1], Val::Int(-129)),
            (
                vec![1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0],
                Val::Oid(vec![1, 3, 6, 1, 4, 1, 99847, 0, 1]),
            ),
            (vec![2, 999, 4_294_967_295], Val::Counter64(u64::MAX)),
            (vec![1, 3], Val::Gauge32(u32::MAX)),
            (vec![1, 3], Val::Str(b"fax1\x00\xff".to_vec())),
            (vec![1, 3], Val::IpAddress([192, 0, 2, 200])),
            (vec![1, 3], Val::EndOfMibView),
        ];
        let bytes = pdu(INFORM, 7, &vbs);
        let p = decode_pdu(&bytes).unwrap();
        assert_eq!((p.tag, p.request_id, p.varbinds), (INFORM, 7, vbs));
    }

    #[test]
    fn known_encodings() {
        assert_eq!(int(0), [2, 1, 0]);
        assert_eq!(int(128), [2, 2, 0, 128]);
        assert_eq!(int(-1), [2, 1, 0xff]);
        assert_eq!(
            oid(&[1, 3, 6, 1, 4, 1, 99847]),
            [6, 8, 0x2b, 6, 1, 4, 1, 0x86, 0x8c, 0x07]
        );
        assert_eq!(value(&Val::Gauge32(255)), [0x42, 2, 0, 255]);
        let long = tlv(4, &[0; 300]);
        assert_eq!(&long[..4], &[4, 0x82, 1, 44]);
        assert_eq!(header_len(300), 4);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut rng = crate::testing::Lcg(5);
        let good = pdu(RESPONSE, 1, &[(vec![1, 3, 6], Val::Int(5))]);
        for _ in 0..5000 {
            let mut b = good.clone();
            let i = (rng.next_u64() as usize) % b.len();
            b[i] = (rng.next_u64() >> 56) as u8;
            b.truncate((rng.next_u64() as usize) % (good.len() + 1));
            let _ = decode_pdu(&b);
        }
        assert_eq!(decode_pdu(&[0x30, 0x84, 0xff]), Err(BerError::Truncated));
    }
}
