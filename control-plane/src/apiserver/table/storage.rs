//! Printers for storage kinds: StorageClass, PersistentVolume and PersistentVolumeClaim
//! (ports of Kubernetes' printers).

use jiff::Timestamp;
use serde_json::{Value, json};

use super::format::{access_modes, age, bool_at, name, str_at, str_or, terminating};
use super::{AGE, Cells, Column, NAME, Printer, RowFn, col, wide};

pub(super) fn printer(kind: &str) -> Option<Printer> {
    let (columns, row): (&'static [Column], RowFn) = match kind {
        "StorageClass" => (STORAGE_CLASS, storage_class),
        "PersistentVolume" => (PV, persistent_volume),
        "PersistentVolumeClaim" => (PVC, persistent_volume_claim),
        _ => return None,
    };
    Some(Printer { columns, row })
}

const STORAGE_CLASS: &[Column] = &[
    NAME,
    col("Provisioner", "string", "Indicates the type of the provisioner."),
    col("ReclaimPolicy", "string", "Indicates the type of the reclaim policy."),
    col("VolumeBindingMode", "string", "Indicates how PersistentVolumeClaims should be provisioned and bound."),
    col("AllowVolumeExpansion", "string", "Indicates whether the storage class allow volume expand."),
    AGE,
];

fn storage_class(sc: &Value, now: Timestamp) -> Cells {
    let default = ["storageclass.kubernetes.io/is-default-class", "storageclass.beta.kubernetes.io/is-default-class"]
        .iter()
        .any(|a| sc.pointer("/metadata/annotations").and_then(|m| m.get(*a)).and_then(Value::as_str) == Some("true"));
    let mut display = name(sc);
    if default {
        display.push_str(" (default)");
    }
    vec![
        json!(display),
        json!(str_at(sc, "/provisioner")),
        json!(str_or(sc, "/reclaimPolicy", "Delete")),
        json!(str_or(sc, "/volumeBindingMode", "Immediate")),
        json!(bool_at(sc, "/allowVolumeExpansion")),
        json!(age(sc, now)),
    ]
}

const PV: &[Column] = &[
    NAME,
    col("Capacity", "string", "capacity is the description of the persistent volume's resources and capacity."),
    col("Access Modes", "string", "accessModes contains all ways the volume can be mounted."),
    col(
        "Reclaim Policy",
        "string",
        "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim.",
    ),
    col("Status", "string", "phase indicates if a volume is available, bound to a claim, or released by a claim."),
    col(
        "Claim",
        "string",
        "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim.",
    ),
    col(
        "StorageClass",
        "string",
        "storageClassName is the name of StorageClass to which this persistent volume belongs.",
    ),
    col("VolumeAttributesClass", "string", "Name of VolumeAttributesClass to which this persistent volume belongs."),
    col(
        "Reason",
        "string",
        "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI.",
    ),
    AGE,
    wide(
        "VolumeMode",
        "string",
        "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state.",
    ),
];

fn quantity(v: &Value, pointer: &str) -> String {
    match v.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".to_string(),
    }
}

fn optional_or_unset(v: &Value, pointer: &str) -> String {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("<unset>").to_string()
}

fn volume_class(v: &Value, spec_field: &str) -> String {
    v.pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
        .and_then(Value::as_str)
        .unwrap_or_else(|| str_at(v, spec_field))
        .to_string()
}

fn persistent_volume(pv: &Value, now: Timestamp) -> Cells {
    let claim = match pv.pointer("/spec/claimRef").filter(|c| c.is_object()) {
        Some(c) => format!("{}/{}", str_at(c, "/namespace"), str_at(c, "/name")),
        None => String::new(),
    };
    let phase = if terminating(pv) { "Terminating" } else { str_at(pv, "/status/phase") };
    vec![
        json!(name(pv)),
        json!(quantity(pv, "/spec/capacity/storage")),
        json!(access_modes(pv, "/spec/accessModes")),
        json!(str_at(pv, "/spec/persistentVolumeReclaimPolicy")),
        json!(phase),
        json!(claim),
        json!(volume_class(pv, "/spec/storageClassName")),
        json!(optional_or_unset(pv, "/spec/volumeAttributesClassName")),
        json!(str_at(pv, "/status/reason")),
        json!(age(pv, now)),
        json!(optional_or_unset(pv, "/spec/volumeMode")),
    ]
}

const PVC: &[Column] = &[
    NAME,
    col("Status", "string", "phase represents the current phase of PersistentVolumeClaim."),
    col("Volume", "string", "volumeName is the binding reference to the PersistentVolume backing this claim."),
    col("Capacity", "string", "capacity represents the actual resources of the underlying volume."),
    col("Access Modes", "string", "accessModes contains the desired access modes the volume should have."),
    col("StorageClass", "string", "storageClassName is the name of the StorageClass required by the claim."),
    col(
        "VolumeAttributesClass",
        "string",
        "volumeAttributesClassName may be used to set the VolumeAttributesClass used by this claim.",
    ),
    AGE,
    wide("VolumeMode", "string", "volumeMode defines what type of volume is required by the claim."),
];

fn persistent_volume_claim(pvc: &Value, now: Timestamp) -> Cells {
    let phase = if terminating(pvc) { "Terminating" } else { str_at(pvc, "/status/phase") };
    let bound = !str_at(pvc, "/spec/volumeName").is_empty();
    let (capacity, modes) = if bound {
        (quantity(pvc, "/status/capacity/storage"), access_modes(pvc, "/status/accessModes"))
    } else {
        (String::new(), String::new())
    };
    vec![
        json!(name(pvc)),
        json!(phase),
        json!(str_at(pvc, "/spec/volumeName")),
        json!(capacity),
        json!(modes),
        json!(volume_class(pvc, "/spec/storageClassName")),
        json!(optional_or_unset(pvc, "/spec/volumeAttributesClassName")),
        json!(age(pvc, now)),
        json!(optional_or_unset(pvc, "/spec/volumeMode")),
    ]
}
