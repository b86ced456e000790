//! Printers for configuration kinds: ConfigMap, Secret and ServiceAccount.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::format::{age, arr_at, len_at, name, str_at};
use super::{AGE, Cells, Column, NAME, Printer, RowFn, col};

pub(super) fn printer(kind: &str) -> Option<Printer> {
    let (columns, row): (&'static [Column], RowFn) = match kind {
        "ConfigMap" => (CONFIG_MAP, config_map),
        "Secret" => (SECRET, secret),
        "ServiceAccount" => (SERVICE_ACCOUNT, service_account),
        _ => return None,
    };
    Some(Printer { columns, row })
}

const CONFIG_MAP: &[Column] = &[NAME, col("Data", "integer", "Data contains the configuration data."), AGE];

fn config_map(cm: &Value, now: Timestamp) -> Cells {
    let count = len_at(cm, "/data") + len_at(cm, "/binaryData");
    vec![json!(name(cm)), json!(count), json!(age(cm, now))]
}

const SECRET: &[Column] = &[
    NAME,
    col("Type", "string", "The type of the secret"),
    col("Data", "integer", "The number of entries in the secret"),
    AGE,
];

fn secret(s: &Value, now: Timestamp) -> Cells {
    let ty = match str_at(s, "/type") {
        "" => "Opaque",
        ty => ty,
    };
    vec![json!(name(s)), json!(ty), json!(len_at(s, "/data")), json!(age(s, now))]
}

const SERVICE_ACCOUNT: &[Column] = &[
    NAME,
    col(
        "Secrets",
        "integer",
        "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
    ),
    AGE,
];

fn service_account(sa: &Value, now: Timestamp) -> Cells {
    vec![json!(name(sa)), json!(arr_at(sa, "/secrets").len()), json!(age(sa, now))]
}
