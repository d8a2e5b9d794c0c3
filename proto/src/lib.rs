//! # ferry-proto — the shared vocabulary and the pure rules
//!
//! Layout:
//! - [`model`]: job, task, settings, site structure, plan, chunk, item outcome,
//!   progress event. Every wire message carries `schema_version`.
//! - [`incremental`]: the incremental-migration decision (SPMT's table) as one
//!   pure function.
//! - [`names`]: SharePoint Online name and path validation, with the
//!   replace-or-skip policy.
//! - [`bulk`]: parsers for SPMT's bulk task files (8-column CSV, JSON).
//! - [`structure`]: checks of a (possibly hand-edited) plan's destination
//!   site URLs before anything is created.
//!
//! Architecture invariant: this crate does no I/O and has no async runtime;
//! every function here is deterministic and table-tested.

pub mod bulk;
pub mod incremental;
pub mod model;
pub mod names;
pub mod structure;

pub use model::*;

/// Errors of the pure layer. Every variant names what to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("{what} has schema version {found}, this Ferry understands up to {supported}: upgrade Ferry to read it")]
    SchemaVersion {
        what: String,
        found: u32,
        supported: u32,
    },
    #[error("{0}")]
    Bulk(#[from] bulk::BulkError),
}
