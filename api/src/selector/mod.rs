//! Label and field selectors: the `?labelSelector=` / `?fieldSelector=` query
//! syntax, the structured `LabelSelector` of workload specs, and matching.
//!
//! Owns parsing and matching only. Which fields a kind supports, and how their
//! values are read from an object, lives in [`crate::fields`].

mod field;
mod label;
mod parse;

pub use field::{FieldOperator, FieldRequirement, FieldSelector};
pub use label::{LabelSelector, Operator, Requirement};

/// Why a selector was rejected. The `Display` text is what the API server puts
/// in the 400 `BadRequest` status message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The selector string does not follow the grammar.
    #[error("unable to parse requirement: {message} in {input:?} at position {position}")]
    Syntax {
        /// The whole selector text.
        input: String,
        /// Byte offset where parsing failed.
        position: usize,
        /// What was found and what was expected.
        message: String,
    },
    /// A key is not a qualified name.
    #[error("unable to parse requirement: invalid label key {key:?}: {reason}")]
    InvalidKey {
        /// The offending key.
        key: String,
        /// Kubernetes' description of the problem.
        reason: String,
    },
    /// A value is not a valid label value.
    #[error("unable to parse requirement: invalid label value: {value:?}: at key: {key:?}: {reason}")]
    InvalidValue {
        /// The key the value belongs to.
        key: String,
        /// The offending value.
        value: String,
        /// Kubernetes' description of the problem.
        reason: String,
    },
    /// A `matchExpressions` operator is not In/NotIn/Exists/DoesNotExist.
    #[error("{operator:?} is not a valid label selector operator")]
    InvalidOperator {
        /// The offending operator.
        operator: String,
    },
    /// The values do not fit the operator (e.g. `In` with no values).
    #[error("unable to parse requirement: values for key {key:?}: {reason}")]
    InvalidValues {
        /// The key of the requirement.
        key: String,
        /// What is wrong with the values.
        reason: String,
    },
    /// A field selector term could not be understood.
    #[error("invalid selector: '{input}'; can't understand '{term}'")]
    FieldTerm {
        /// The whole selector text.
        input: String,
        /// The term that failed.
        term: String,
    },
}
