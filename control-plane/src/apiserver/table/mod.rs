//! Server-side printing: renders a list of objects as a `meta.k8s.io/v1` `Table`, what
//! `kubectl get` asks for with `Accept: application/json;as=Table;g=meta.k8s.io;v=v1`.
//!
//! Columns and cell logic follow Kubernetes' `pkg/printers/internalversion/printers.go`,
//! always in "wide" form (priority-1 columns are what `-o wide` shows; kubectl hides them
//! otherwise). Printers are pure functions over the stored JSON, so they work for every
//! API version of a kind and never fail: a missing field prints as Kubernetes would print
//! the Go zero value. Content negotiation and list retrieval are not handled here.

mod autoscaling;
mod cluster;
mod config;
mod format;
mod network;
mod pod;
mod storage;
mod workloads;

use jiff::Timestamp;
use serde_json::{Map, Value, json};

pub use format::human_duration;

/// What each row's `object` field carries (the `includeObject` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// `object` is null.
    None,
    /// `object` is a `PartialObjectMetadata` (kubectl uses it for namespaces and labels).
    #[default]
    Metadata,
    /// `object` is the full object.
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter value (`None`, `Metadata`, `Object`).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "None" => Some(Self::None),
            "Metadata" => Some(Self::Metadata),
            "Object" => Some(Self::Object),
            _ => None,
        }
    }
}

/// A column definition (`TableColumnDefinition`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Column {
    name: &'static str,
    ty: &'static str,
    format: &'static str,
    priority: i32,
    description: &'static str,
}

/// A standard column shown by plain `kubectl get`.
pub(crate) const fn col(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column { name, ty, format: "", priority: 0, description }
}

/// A priority-1 column, shown by `kubectl get -o wide`.
pub(crate) const fn wide(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column { name, ty, format: "", priority: 1, description }
}

/// The `Name` column every printer starts with.
pub(crate) const NAME: Column = Column {
    name: "Name",
    ty: "string",
    format: "name",
    priority: 0,
    description: "Name must be unique within a namespace. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
};

/// The `Age` column.
pub(crate) const AGE: Column =
    col("Age", "string", "CreationTimestamp is a timestamp representing the server time when this object was created.");

/// Cells of one row, in column order.
pub(crate) type Cells = Vec<Value>;

/// Computes one row's cells at a given time.
pub(crate) type RowFn = fn(&Value, Timestamp) -> Cells;

/// A kind's printer: its columns and how to compute one row's cells at a given time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Printer {
    pub columns: &'static [Column],
    pub row: RowFn,
}

fn default_row(v: &Value, now: Timestamp) -> Cells {
    vec![json!(format::name(v)), json!(format::age(v, now))]
}

const DEFAULT: Printer = Printer { columns: &[NAME, AGE], row: default_row };

fn printer(kind: &str) -> Printer {
    pod::printer(kind)
        .or_else(|| workloads::printer(kind))
        .or_else(|| network::printer(kind))
        .or_else(|| cluster::printer(kind))
        .or_else(|| storage::printer(kind))
        .or_else(|| autoscaling::printer(kind))
        .or_else(|| config::printer(kind))
        .unwrap_or(DEFAULT)
}

/// Renders `items` (objects of `kind`) as a `meta.k8s.io/v1` `Table` with the list's
/// `resource_version` and `continue_token`.
pub fn to_table(
    kind: &str,
    items: &[Value],
    include_object: IncludeObject,
    resource_version: &str,
    continue_token: Option<&str>,
) -> Value {
    to_table_at(kind, items, include_object, resource_version, continue_token, Timestamp::now())
}

/// [`to_table`] with an explicit "now", so ages are deterministic in tests.
pub(crate) fn to_table_at(
    kind: &str,
    items: &[Value],
    include_object: IncludeObject,
    resource_version: &str,
    continue_token: Option<&str>,
    now: Timestamp,
) -> Value {
    let printer = printer(kind);
    let columns: Vec<Value> = printer
        .columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.ty,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let mut row = Map::new();
            row.insert("cells".into(), Value::Array((printer.row)(item, now)));
            if kind == "Pod"
                && let Some(conditions) = pod::row_conditions(item)
            {
                row.insert("conditions".into(), conditions);
            }
            row.insert("object".into(), row_object(item, include_object));
            Value::Object(row)
        })
        .collect();
    let mut metadata = Map::new();
    metadata.insert("resourceVersion".into(), json!(resource_version));
    if let Some(token) = continue_token.filter(|t| !t.is_empty()) {
        metadata.insert("continue".into(), json!(token));
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

fn row_object(item: &Value, include: IncludeObject) -> Value {
    match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => item.clone(),
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": item.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
    }
}

#[cfg(test)]
mod tests;
