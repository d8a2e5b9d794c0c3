//! SPMT bulk task files (to be written).

/// An error in a bulk task file, naming the file, line and field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct BulkError(pub String);
