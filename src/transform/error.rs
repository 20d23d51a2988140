//! Errors of the transform stage. Objects come from an API server, so most
//! errors mean the exporter handed over something that is not a whole object,
//! or a manifest carries a value the API server accepted but we cannot read.

use super::object::ObjectRef;
use super::quantity::QuantityError;

/// Why the transform could not decide what to do with a namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    /// An exported object lacks a field every API object has.
    #[error(
        "exported object #{index}: field `{field}` {problem}; pass whole objects as the API server returns them (apiVersion, kind, metadata.name)"
    )]
    MalformedObject {
        /// Position of the object in the exported list.
        index: usize,
        /// JSON path of the missing or wrong field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A resource quantity could not be parsed.
    #[error(
        "{object}: field `{field}` = {value:?} is not a Kubernetes quantity: {source}; write it like \"500m\", \"0.5\", \"128Mi\", \"1Gi\", \"2k\" or \"1e3\""
    )]
    InvalidQuantity {
        /// Object holding the quantity.
        object: Box<ObjectRef>,
        /// JSON path of the quantity.
        field: String,
        /// The text found.
        value: String,
        /// Why it is not a quantity.
        #[source]
        source: QuantityError,
    },
    /// A Ferry annotation holds a value Ferry did not write.
    #[error(
        "{object}: annotation `{key}` = {value:?} {problem}; remove the annotation or set it to the value it should restore"
    )]
    InvalidAnnotation {
        /// Object carrying the annotation.
        object: Box<ObjectRef>,
        /// Annotation key.
        key: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        problem: &'static str,
    },
    /// An ordinal split asks the source to keep more pods than the StatefulSet has.
    #[error(
        "{object}: cannot keep {requested} ordinals on the source of a StatefulSet with {replicas} replicas; choose 0..={replicas}"
    )]
    InvalidSplit {
        /// The StatefulSet.
        object: Box<ObjectRef>,
        /// Its replica count.
        replicas: i64,
        /// Ordinals asked to stay on the source.
        requested: i64,
    },
    /// The transform context itself is unusable.
    #[error("transform context: `{field}` = {value:?} {problem}")]
    InvalidContext {
        /// Context field.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong and what would be valid.
        problem: String,
    },
}
