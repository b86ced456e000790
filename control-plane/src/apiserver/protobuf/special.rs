//! The apimachinery types whose JSON form is not an object of their protobuf fields:
//! timestamps, quantities, int-or-strings, durations and embedded raw JSON. Each decoder
//! mirrors the Go type's `Unmarshal` followed by its `MarshalJSON`.

use serde_json::Value;

use super::ProtobufError;
use super::json::scalar;
use super::schema::Scalar;
use super::wire::{Reader, WireValue};

const TIME: &str = "apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "apimachinery.pkg.apis.meta.v1.MicroTime";
const DURATION: &str = "apimachinery.pkg.apis.meta.v1.Duration";
const FIELDS_V1: &str = "apimachinery.pkg.apis.meta.v1.FieldsV1";
const QUANTITY: &str = "apimachinery.pkg.api.resource.Quantity";
const INT_OR_STRING: &str = "apimachinery.pkg.util.intstr.IntOrString";
const RAW_EXTENSION: &str = "apimachinery.pkg.runtime.RawExtension";

/// Full names of the messages decoded here.
pub const NAMES: &[&str] = &[TIME, MICRO_TIME, DURATION, FIELDS_V1, QUANTITY, INT_OR_STRING, RAW_EXTENSION];

/// Decodes the special message `name`; `None` means Go would marshal `null` (omit it).
pub fn decode(name: &str, bytes: &[u8]) -> Result<Option<Value>, ProtobufError> {
    let fields = Fields::read(bytes)?;
    let value = match name {
        // Go marshals a zero Time as an empty message and decodes that back to zero (`null`).
        TIME | MICRO_TIME if bytes.is_empty() => None,
        // `Time` keeps whole seconds only (as the Go Unmarshal does); `MicroTime` keeps micros.
        TIME => Some(Value::String(timestamp(fields.int(1)?, 0, false)?)),
        MICRO_TIME => Some(Value::String(timestamp(fields.int(1)?, fields.int(2)?, true)?)),
        DURATION => Some(Value::String(go_duration(fields.int(1)?))),
        QUANTITY => Some(Value::String(fields.string(1)?.unwrap_or_else(|| "0".into()))),
        INT_OR_STRING => Some(match fields.int(1)? {
            1 => Value::String(fields.string(3)?.unwrap_or_default()),
            _ => Value::Number(fields.int(2)?.into()),
        }),
        FIELDS_V1 | RAW_EXTENSION => match fields.get(1) {
            Some(WireValue::Bytes(raw)) if !raw.is_empty() => Some(
                serde_json::from_slice(raw)
                    .map_err(|e| ProtobufError::Malformed(format!("embedded raw object is not JSON: {e}")))?,
            ),
            Some(WireValue::Bytes(_)) | None => None,
            Some(other) => return Err(ProtobufError::WireType { expected: "bytes".into(), found: other.wire_name() }),
        },
        other => return Err(ProtobufError::Schema(format!("{other} is not a special message"))),
    };
    Ok(value)
}

/// The last value of each tag of a small message.
struct Fields<'a>(Vec<(u32, WireValue<'a>)>);

impl<'a> Fields<'a> {
    fn read(bytes: &'a [u8]) -> Result<Self, ProtobufError> {
        let mut reader = Reader::new(bytes);
        let mut out = Vec::new();
        while let Some(field) = reader.next_field()? {
            out.push(field);
        }
        Ok(Self(out))
    }

    fn get(&self, tag: u32) -> Option<WireValue<'a>> {
        self.0.iter().rev().find(|(t, _)| *t == tag).map(|(_, v)| *v)
    }

    /// A varint-encoded integer field (int32 and int64 alike), 0 when absent.
    fn int(&self, tag: u32) -> Result<i64, ProtobufError> {
        match self.get(tag) {
            None => Ok(0),
            Some(v) => scalar(Scalar::Int64, v)?
                .as_i64()
                .ok_or_else(|| ProtobufError::Malformed("integer out of range".into())),
        }
    }

    fn string(&self, tag: u32) -> Result<Option<String>, ProtobufError> {
        match self.get(tag) {
            None => Ok(None),
            Some(v) => Ok(scalar(Scalar::String, v)?.as_str().map(str::to_owned)),
        }
    }
}

/// RFC 3339 in UTC, as Go's `time.RFC3339` / `RFC3339Micro` layouts print it.
fn timestamp(seconds: i64, nanos: i64, micros: bool) -> Result<String, ProtobufError> {
    let ts = jiff::Timestamp::from_second(seconds)
        .map_err(|e| ProtobufError::Malformed(format!("timestamp {seconds}s out of range: {e}")))?;
    let base = ts.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    if micros {
        if !(0..1_000_000_000).contains(&nanos) {
            return Err(ProtobufError::Malformed(format!("timestamp nanos {nanos} out of range")));
        }
        Ok(format!("{base}.{:06}Z", nanos / 1000))
    } else {
        Ok(format!("{base}Z"))
    }
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `1.5ms`, `0s`.
pub fn go_duration(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    if u == 0 {
        return "0s".into();
    }
    let body = if u < 1_000_000_000 {
        let (unit, scale, digits) = match u {
            0..1_000 => ("ns", 1, 0),
            1_000..1_000_000 => ("µs", 1_000, 3),
            _ => ("ms", 1_000_000, 6),
        };
        format!("{}{}{unit}", u / scale, fraction(u % scale, digits))
    } else {
        let secs = u / 1_000_000_000;
        let frac = fraction(u % 1_000_000_000, 9);
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        match (h, m) {
            (0, 0) => format!("{s}{frac}s"),
            (0, _) => format!("{m}m{s}{frac}s"),
            _ => format!("{h}h{m}m{s}{frac}s"),
        }
    };
    format!("{sign}{body}")
}

/// `.5` for 500 with 3 digits; empty for 0 (Go drops a zero fraction entirely).
fn fraction(v: u64, digits: usize) -> String {
    if v == 0 || digits == 0 {
        return String::new();
    }
    let s = format!(".{v:0digits$}");
    s.trim_end_matches('0').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        for (ns, want) in [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (1_500_000, "1.5ms"),
            (1_500_000_000, "1.5s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (-2_000_000_000, "-2s"),
        ] {
            assert_eq!(go_duration(ns), want);
        }
    }

    #[test]
    fn times_quantities_and_int_or_strings() {
        // seconds = 1700000000, nanos = 123456789
        let time = [0x08, 0x80, 0xe2, 0xcf, 0xaa, 0x06, 0x10, 0x95, 0x9a, 0xef, 0x3a];
        assert_eq!(decode(TIME, &time).expect("time"), Some(Value::String("2023-11-14T22:13:20Z".into())));
        assert_eq!(
            decode(MICRO_TIME, &time).expect("micro"),
            Some(Value::String("2023-11-14T22:13:20.123456Z".into()))
        );
        assert_eq!(decode(TIME, &[]).expect("zero time"), None);
        assert_eq!(
            decode(QUANTITY, &[0x0a, 4, b'1', b'0', b'0', b'm']).expect("q"),
            Some(Value::String("100m".into()))
        );
        assert_eq!(decode(INT_OR_STRING, &[0x08, 0, 0x10, 80]).expect("int"), Some(Value::Number(80.into())));
        assert_eq!(
            decode(INT_OR_STRING, &[0x08, 1, 0x1a, 4, b'h', b't', b't', b'p']).expect("str"),
            Some(Value::String("http".into()))
        );
        assert_eq!(decode(RAW_EXTENSION, &[0x0a, 2, b'{', b'}']).expect("raw"), Some(serde_json::json!({})));
        assert!(decode(RAW_EXTENSION, &[0x0a, 1, b'{']).is_err());
        assert!(decode(TIME, &[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_err());
    }
}
