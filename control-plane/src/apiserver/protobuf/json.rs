//! Turns one encoded message into the JSON the same Go object marshals to, driven by the
//! field tables of [`super::schema`].
//!
//! Semantics follow how the Go types round-trip: repeated fields become arrays, maps become
//! objects, bytes become base64, the well-known types of [`super::special`] get their JSON
//! forms, embedded Go structs are inlined, and unknown tags are skipped. The Go marshaller
//! writes every non-pointer field even when it holds its zero value; a singular empty string
//! or empty bytes field is therefore dropped (Go's `omitempty` would drop it, and defaulting
//! treats `""` as unset), while zero numbers and `false` are kept because for pointer fields
//! (`replicas: 0`) they carry meaning and for the others they mean the same as absence.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::ProtobufError;
use super::schema::{Kind, Message, Scalar, Schema};
use super::special;
use super::wire::{Reader, WireValue};

/// Messages with a JSON form of their own (see [`super::special`]); not in the table.
pub const SPECIAL: &[&str] = special::NAMES;

/// Deepest nesting accepted (the served kinds nest far less; this bounds hostile input).
const MAX_DEPTH: usize = 64;

/// Decodes `bytes` as the message `name` into a JSON object.
pub fn message(schema: &Schema, name: &str, bytes: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::TooDeep);
    }
    let msg = schema.get(name).ok_or_else(|| ProtobufError::Schema(format!("no message {name}")))?;
    let mut slots: Vec<Option<Value>> = vec![None; msg.fields.len()];
    let mut reader = Reader::new(bytes);
    while let Some((tag, value)) = reader.next_field()? {
        let Some(i) = msg.index_of(tag) else { continue };
        let field = &msg.fields[i];
        let at = |e: ProtobufError| e.at(field.json.unwrap_or(""));
        if let Kind::Map { key, value: value_kind } = &field.kind {
            let WireValue::Bytes(entry) = value else {
                return Err(at(wire_error("map entry", value)));
            };
            let (k, v) = map_entry(schema, *key, value_kind, entry, depth).map_err(at)?;
            let obj = slots[i].get_or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(obj) = obj {
                obj.insert(k, v);
            }
        } else if field.repeated {
            let items = repeated(schema, &field.kind, value, depth).map_err(at)?;
            let arr = slots[i].get_or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(arr) = arr {
                arr.extend(items);
            }
        } else {
            // Last one wins, as protobuf specifies for singular fields.
            slots[i] = single(schema, &field.kind, value, depth).map_err(at)?;
        }
    }
    Ok(Value::Object(assemble(msg, slots)))
}

/// Builds the object in declaration order, inlining embedded structs.
fn assemble(msg: &Message, slots: Vec<Option<Value>>) -> Map<String, Value> {
    let mut out = Map::new();
    for (field, slot) in msg.fields.iter().zip(slots) {
        match (field.json, slot) {
            (_, None) => {}
            (Some(name), Some(v)) => {
                out.insert(name.to_string(), v);
            }
            (None, Some(Value::Object(inner))) => out.extend(inner),
            (None, Some(_)) => {}
        }
    }
    out
}

/// A singular field: `None` when Go would omit it (see the module docs).
fn single(schema: &Schema, kind: &Kind, value: WireValue<'_>, depth: usize) -> Result<Option<Value>, ProtobufError> {
    match kind {
        Kind::Scalar(Scalar::String | Scalar::Bytes) if matches!(value, WireValue::Bytes(b) if b.is_empty()) => {
            Ok(None)
        }
        Kind::Scalar(s) => scalar(*s, value).map(Some),
        Kind::Message(name) => match value {
            WireValue::Bytes(b) => embedded(schema, name, b, depth),
            other => Err(wire_error("message", other)),
        },
        Kind::Map { .. } => Err(ProtobufError::Schema("map kind in singular position".into())),
    }
}

/// The items one wire value of a repeated field contributes (packed scalars give several).
fn repeated(schema: &Schema, kind: &Kind, value: WireValue<'_>, depth: usize) -> Result<Vec<Value>, ProtobufError> {
    match (kind, value) {
        (Kind::Message(name), WireValue::Bytes(b)) => {
            Ok(vec![embedded(schema, name, b, depth)?.unwrap_or(Value::Null)])
        }
        (Kind::Scalar(s @ (Scalar::String | Scalar::Bytes)), v) => Ok(vec![scalar(*s, v)?]),
        (Kind::Scalar(s), WireValue::Bytes(packed)) => {
            let mut reader = Reader::new(packed);
            let mut out = Vec::new();
            while !reader.is_empty() {
                let v = match s {
                    Scalar::Double | Scalar::Fixed64 | Scalar::Sfixed64 => {
                        WireValue::Fixed64(u64::from_le_bytes(reader.array::<8>()?))
                    }
                    Scalar::Float | Scalar::Fixed32 | Scalar::Sfixed32 => {
                        WireValue::Fixed32(u32::from_le_bytes(reader.array::<4>()?))
                    }
                    _ => WireValue::Varint(reader.varint()?),
                };
                out.push(scalar(*s, v)?);
            }
            Ok(out)
        }
        (Kind::Scalar(s), v) => Ok(vec![scalar(*s, v)?]),
        (Kind::Message(_), other) => Err(wire_error("message", other)),
        (Kind::Map { .. }, _) => Err(ProtobufError::Schema("repeated map".into())),
    }
}

/// An embedded message: a well-known type's JSON form, or an object.
fn embedded(schema: &Schema, name: &str, bytes: &[u8], depth: usize) -> Result<Option<Value>, ProtobufError> {
    if special::NAMES.contains(&name) {
        return special::decode(name, bytes);
    }
    message(schema, name, bytes, depth + 1).map(Some)
}

/// One map entry: key in field 1, value in field 2, each defaulting when absent.
fn map_entry(
    schema: &Schema,
    key_kind: Scalar,
    value_kind: &Kind,
    entry: &[u8],
    depth: usize,
) -> Result<(String, Value), ProtobufError> {
    let (mut key, mut value) = (None, None);
    let mut reader = Reader::new(entry);
    while let Some((tag, v)) = reader.next_field()? {
        match tag {
            1 => key = Some(scalar(key_kind, v)?),
            2 => {
                value = Some(match value_kind {
                    Kind::Scalar(s) => scalar(*s, v)?,
                    Kind::Message(name) => match v {
                        WireValue::Bytes(b) => embedded(schema, name, b, depth)?.unwrap_or(Value::Null),
                        other => return Err(wire_error("message", other)),
                    },
                    Kind::Map { .. } => return Err(ProtobufError::Schema("map of maps".into())),
                })
            }
            _ => {}
        }
    }
    let key = match key {
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let value = match (value, value_kind) {
        (Some(v), _) => v,
        (None, Kind::Scalar(s)) => default_scalar(*s),
        (None, Kind::Message(name)) => embedded(schema, name, &[], depth)?.unwrap_or(Value::Null),
        (None, Kind::Map { .. }) => Value::Null,
    };
    Ok((key, value))
}

fn default_scalar(s: Scalar) -> Value {
    match s {
        Scalar::String | Scalar::Bytes => Value::String(String::new()),
        Scalar::Bool => Value::Bool(false),
        _ => Value::Number(0.into()),
    }
}

/// A scalar's JSON value; the wire type must match the declared type.
pub fn scalar(s: Scalar, value: WireValue<'_>) -> Result<Value, ProtobufError> {
    // Truncating casts below are protobuf's own rules (int32 travels sign-extended to 64 bits).
    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
    let json = match (s, value) {
        (Scalar::String, WireValue::Bytes(b)) => Value::String(
            std::str::from_utf8(b).map_err(|_| ProtobufError::Malformed("string is not UTF-8".into()))?.to_string(),
        ),
        (Scalar::Bytes, WireValue::Bytes(b)) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        (Scalar::Bool, WireValue::Varint(v)) => Value::Bool(v != 0),
        (Scalar::Int32, WireValue::Varint(v)) => Value::Number((v as i32).into()),
        (Scalar::Int64, WireValue::Varint(v)) => Value::Number((v as i64).into()),
        (Scalar::Uint32, WireValue::Varint(v)) => Value::Number((v as u32).into()),
        (Scalar::Uint64, WireValue::Varint(v)) => Value::Number(v.into()),
        (Scalar::Sint32, WireValue::Varint(v)) => Value::Number((zigzag(v) as i32).into()),
        (Scalar::Sint64, WireValue::Varint(v)) => Value::Number(zigzag(v).into()),
        (Scalar::Fixed32, WireValue::Fixed32(v)) => Value::Number(v.into()),
        (Scalar::Sfixed32, WireValue::Fixed32(v)) => Value::Number((v as i32).into()),
        (Scalar::Fixed64, WireValue::Fixed64(v)) => Value::Number(v.into()),
        (Scalar::Sfixed64, WireValue::Fixed64(v)) => Value::Number((v as i64).into()),
        (Scalar::Double, WireValue::Fixed64(v)) => float(f64::from_bits(v))?,
        (Scalar::Float, WireValue::Fixed32(v)) => float(f64::from(f32::from_bits(v)))?,
        (s, other) => return Err(wire_error(&format!("{s:?}").to_ascii_lowercase(), other)),
    };
    Ok(json)
}

#[allow(clippy::cast_possible_wrap)]
fn zigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn float(f: f64) -> Result<Value, ProtobufError> {
    Number::from_f64(f).map(Value::Number).ok_or_else(|| ProtobufError::Malformed(format!("{f} is not a JSON number")))
}

fn wire_error(expected: &str, found: WireValue<'_>) -> ProtobufError {
    ProtobufError::WireType { expected: expected.to_string(), found: found.wire_name() }
}
