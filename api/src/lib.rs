//! Skiff object model: the pure, I/O-free rules of the Kubernetes API that the
//! API server and controllers share.
//!
//! Owns:
//! * [`selector`] — label and field selector syntax and matching;
//! * [`fields`] — which field labels each kind supports and their values;
//! * [`validation`] — per-kind object validation with Kubernetes' field paths
//!   and messages, including what may not change on update;
//! * [`defaults`] — the defaults the apiserver fills in;
//! * [`quantity`] — resource quantities (`100m`, `1.5Gi`);
//! * [`labels`] — well-known label, annotation and taint keys;
//! * [`cron`] — CronJob schedules and their next run times;
//! * [`scale_to_zero`] — the scale-to-zero annotations of WASM HTTP Deployments and the idle rule.
//!
//! Objects are handled as `serde_json::Value` (normalised JSON of the
//! k8s-openapi types), so the same code serves built-in and custom kinds.
//! Storage, HTTP and the wire `Status` format live in the control plane.

pub mod cron;
pub mod defaults;
pub mod fields;
pub mod labels;
pub mod quantity;
pub mod scale_to_zero;
pub mod selector;
pub mod validation;
