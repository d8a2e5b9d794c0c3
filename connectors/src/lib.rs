//! # ferry-connectors — the ends of a migration
//!
//! - [`fileshare`]: a file-share (local directory) source.
//! - [`spserver`]: a SharePoint Server source over its REST API.
//! - [`graph`]: the SharePoint Online destination over Microsoft Graph.
//! - `http` (private): retries, throttling (`Retry-After`) and error bodies in one
//!   place; [`HttpStats`] are the counters the engine reports.
//! - [`sites`]: SharePoint Online site structure over SharePoint REST — site
//!   collections, subsites, libraries, hubs (SPMT's "switch to modern").
//! - `odata` (private): SharePoint REST answer shapes (verbose and JSON light).
//! - [`auth`]: sign-in (device code, client credentials, username + password,
//!   Basic for SharePoint Server) and the encrypted per-site credential cache.
//!
//! The engine sees sources as a stream of [`SourceEntry`] plus a way to open
//! one entry's content as a byte stream; it never holds a whole file in memory.

use std::pin::Pin;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use ferry_proto::ItemKind;
use futures_util::Stream;
use uuid::Uuid;

pub mod auth;
pub mod fileshare;
pub mod graph;
mod http;
mod odata;
pub mod sites;
pub mod spserver;

pub use http::{install_crypto_provider, HttpConfig, HttpStats, HttpStatsSnapshot};

/// A file's content, streamed.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// One file or folder found at the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceEntry {
    /// Path relative to the library (or share) root, `/`-separated, no leading
    /// `/`, with the source's own names (not yet validated for SharePoint Online).
    pub rel_path: String,
    pub kind: ItemKind,
    /// Bytes (0 for folders).
    pub size: u64,
    pub created: Option<DateTime<Utc>>,
    pub modified: Option<DateTime<Utc>>,
    /// SharePoint Server list item `UniqueId`; `None` for file shares.
    pub unique_id: Option<Uuid>,
    /// Hidden (file shares: dot-files or the hidden attribute).
    pub hidden: bool,
    /// Where the item is as the user knows it: absolute path or absolute URL.
    pub location: String,
}

/// An entry the source could not read (permissions, a symlink loop, a vanished
/// file): reported as a failed item, never fatal for the walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadableEntry {
    pub rel_path: String,
    pub location: String,
    pub message: String,
    /// OS error code or HTTP status, as text.
    pub code: String,
}

/// One step of a source walk.
pub type WalkItem = Result<SourceEntry, UnreadableEntry>;

/// Errors of the connectors, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// Sign-in failed: wrong credentials or no consent. Fatal for the job until
    /// the user signs in again.
    #[error("sign-in to {target} failed: {message}. Check the user name, password, client id or secret and sign in again")]
    Auth { target: String, message: String },
    /// The thing named does not exist (site, library, folder).
    #[error("{what} was not found at {location}: {hint}")]
    NotFound {
        what: String,
        location: String,
        hint: String,
    },
    /// The server could not be reached.
    #[error("cannot reach {url}: {message}. Check the URL, the network and any proxy")]
    Unreachable { url: String, message: String },
    /// Throttled or a server error that outlived our retries: retry the chunk later.
    #[error("{url} kept answering {status} after {attempts} attempts: retry later")]
    Transient {
        url: String,
        status: u16,
        attempts: u32,
    },
    /// The server refused this one item (name, size, quota, conflict).
    #[error("{url} refused the item: {status} {code}: {message}")]
    Rejected {
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    /// Content arrived but its hash does not match what was sent.
    #[error("hash mismatch for {location}: sent {sent}, stored {stored}; the item will be uploaded again on the next run")]
    HashMismatch {
        location: String,
        sent: String,
        stored: String,
    },
    /// Local I/O (file share) error.
    #[error("{location}: {source}")]
    Io {
        location: String,
        #[source]
        source: std::io::Error,
    },
    /// A site collection is still being provisioned when the caller stopped
    /// waiting: retry later (the next attempt finds it and waits on).
    #[error("the site {url} is not ready: {message}; retry later")]
    NotReady { url: String, message: String },
    /// Anything the server answered that we could not understand.
    #[error("unexpected answer from {url}: {message}")]
    Protocol { url: String, message: String },
}

impl ConnectorError {
    /// Whether trying the same operation later can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ConnectorError::Transient { .. }
                | ConnectorError::Unreachable { .. }
                | ConnectorError::NotReady { .. }
        )
    }
}
