//! The protobuf wire format, schema-free: a reader that splits a message into
//! `(tag, value)` pairs. It knows the four wire types Kubernetes uses (varint, 64-bit,
//! length-delimited, 32-bit) and nothing about what the fields mean — that is
//! [`super::json`]'s job. Every read is bounds-checked, so hostile input ends in an error,
//! never a panic.

use super::ProtobufError;

/// One field value as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireValue<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1.
    Fixed64(u64),
    /// Wire type 2: strings, bytes, embedded messages, map entries, packed repeats.
    Bytes(&'a [u8]),
    /// Wire type 5.
    Fixed32(u32),
}

impl WireValue<'_> {
    /// The wire-type name, for error messages.
    pub fn wire_name(&self) -> &'static str {
        match self {
            WireValue::Varint(_) => "varint",
            WireValue::Fixed64(_) => "64-bit",
            WireValue::Bytes(_) => "length-delimited",
            WireValue::Fixed32(_) => "32-bit",
        }
    }
}

/// Reads the fields of one message, in wire order.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// True when every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The next field, or `None` at the end of the message.
    pub fn next_field(&mut self) -> Result<Option<(u32, WireValue<'a>)>, ProtobufError> {
        if self.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3)
            .map_err(|_| ProtobufError::Malformed(format!("field tag {} out of range", key >> 3)))?;
        if tag == 0 {
            return Err(ProtobufError::Malformed("field tag 0".into()));
        }
        let value = match key & 7 {
            0 => WireValue::Varint(self.varint()?),
            1 => WireValue::Fixed64(u64::from_le_bytes(self.array::<8>()?)),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| ProtobufError::Truncated)?;
                WireValue::Bytes(self.take(len)?)
            }
            5 => WireValue::Fixed32(u32::from_le_bytes(self.array::<4>()?)),
            other => return Err(ProtobufError::Malformed(format!("unsupported wire type {other} for field {tag}"))),
        };
        Ok(Some((tag, value)))
    }

    /// A base-128 varint of at most ten bytes.
    pub fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = *self.buf.get(self.pos).ok_or(ProtobufError::Truncated)?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtobufError::Malformed("varint longer than ten bytes".into()))
    }

    /// `N` raw bytes (the fixed-width wire types).
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtobufError> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], ProtobufError> {
        let end = self.pos.checked_add(len).ok_or(ProtobufError::Truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or(ProtobufError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_wire_type() {
        // field 1 varint 150, field 2 bytes "hi", field 3 fixed64 1, field 4 fixed32 2
        let buf = [0x08, 0x96, 0x01, 0x12, 2, b'h', b'i', 0x19, 1, 0, 0, 0, 0, 0, 0, 0, 0x25, 2, 0, 0, 0];
        let mut r = Reader::new(&buf);
        assert_eq!(r.next_field().expect("f1"), Some((1, WireValue::Varint(150))));
        assert_eq!(r.next_field().expect("f2"), Some((2, WireValue::Bytes(b"hi"))));
        assert_eq!(r.next_field().expect("f3"), Some((3, WireValue::Fixed64(1))));
        assert_eq!(r.next_field().expect("f4"), Some((4, WireValue::Fixed32(2))));
        assert_eq!(r.next_field().expect("end"), None);
    }

    #[test]
    fn truncated_and_malformed_input_errors() {
        for bad in [
            &[0x08][..],
            &[0x12, 5, b'a'],
            &[0x19, 1, 2],
            &[0x0b],
            &[0x00, 1],
            &[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        ] {
            let mut r = Reader::new(bad);
            assert!(r.next_field().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn huge_length_does_not_overflow() {
        let buf = [0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert!(matches!(Reader::new(&buf).next_field(), Err(ProtobufError::Truncated)));
    }
}
