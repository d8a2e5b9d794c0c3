//! The one error type of the emulator, and how it is rendered for each API flavour.

/// Everything that can go wrong answering a request or running the emulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The addressed site, drive, list, item or endpoint does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A name is already taken and the conflict behaviour is `fail`.
    #[error("{0}")]
    NameAlreadyExists(String),
    /// The request is malformed (bad JSON, bad path, bad parameter).
    #[error("{0}")]
    InvalidRequest(String),
    /// No credential, or an unknown or expired one.
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated but not allowed (e.g. bad request digest).
    #[error("{0}")]
    AccessDenied(String),
    /// The app spent its resource-unit budget.
    #[error("The request has been throttled.")]
    Throttled {
        /// Seconds until the budget window resets.
        retry_after: u64,
        /// The budget.
        limit: u64,
    },
    /// Injected or real temporary unavailability.
    #[error("The service is temporarily unavailable.")]
    Unavailable {
        /// Seconds the client should wait.
        retry_after: u64,
    },
    /// Injected internal error.
    #[error("An internal server error occurred.")]
    InjectedInternal,
    /// A fragment does not match the expected byte range of an upload session.
    #[error("{0}")]
    RangeNotSatisfiable(String),
    /// A body or file is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// The method is not supported on this resource.
    #[error("The HTTP method is not supported for this resource.")]
    MethodNotAllowed,
    /// An `If-Match` precondition failed (the item changed since the client read it).
    #[error("{0}")]
    PreconditionFailed(String),
    /// A delta token is unknown or too old.
    #[error("{0}")]
    ResyncRequired(String),
    /// An upload session or token expired.
    #[error("{0}")]
    Gone(String),
    /// A SharePoint REST error with the service's own status, code and message (e.g.
    /// `500` + `-2147024713, Microsoft.SharePoint.SPException` for a taken web URL).
    #[error("{message}")]
    Sp {
        /// HTTP status.
        status: u16,
        /// `"{hresult}, {exception type}"`.
        code: &'static str,
        /// The message.
        message: String,
    },
    /// Local I/O failed (disk full, permissions).
    #[error("I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The metadata store failed.
    #[error("Metadata store failed: {0}")]
    Store(String),
}

/// What a caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The client made a mistake; retrying the same request will fail again.
    ClientError,
    /// Retry after the indicated delay.
    RetryLater,
    /// The emulator itself is broken (disk, store); fatal for the instance.
    Fatal,
}

impl SimError {
    /// HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            SimError::NotFound(_) => 404,
            SimError::NameAlreadyExists(_) => 409,
            SimError::InvalidRequest(_) => 400,
            SimError::Unauthenticated(_) => 401,
            SimError::AccessDenied(_) => 403,
            SimError::Throttled { .. } => 429,
            SimError::Unavailable { .. } => 503,
            SimError::InjectedInternal => 500,
            SimError::RangeNotSatisfiable(_) => 416,
            SimError::TooLarge(_) => 413,
            SimError::MethodNotAllowed => 405,
            SimError::PreconditionFailed(_) => 412,
            SimError::ResyncRequired(_) => 410,
            SimError::Gone(_) => 404,
            SimError::Sp { status, .. } => *status,
            SimError::Io(_) | SimError::Store(_) => 500,
        }
    }

    /// What to do about it.
    pub fn disposition(&self) -> Disposition {
        match self {
            SimError::Throttled { .. }
            | SimError::Unavailable { .. }
            | SimError::InjectedInternal => Disposition::RetryLater,
            SimError::Io(_) | SimError::Store(_) => Disposition::Fatal,
            _ => Disposition::ClientError,
        }
    }

    /// Microsoft Graph error code.
    pub fn graph_code(&self) -> &'static str {
        match self {
            SimError::NotFound(_) => "itemNotFound",
            SimError::NameAlreadyExists(_) => "nameAlreadyExists",
            SimError::InvalidRequest(_) => "invalidRequest",
            SimError::Unauthenticated(_) => "InvalidAuthenticationToken",
            SimError::AccessDenied(_) => "accessDenied",
            SimError::Throttled { .. } => "activityLimitReached",
            SimError::Unavailable { .. } => "serviceNotAvailable",
            SimError::InjectedInternal => "generalException",
            SimError::RangeNotSatisfiable(_) => "invalidRange",
            SimError::TooLarge(_) => "requestEntityTooLarge",
            SimError::MethodNotAllowed => "invalidRequest",
            SimError::PreconditionFailed(_) => "resourceModified",
            SimError::ResyncRequired(_) => "resyncRequired",
            SimError::Gone(_) => "itemNotFound",
            SimError::Sp { status, .. } => match status {
                400 => "invalidRequest",
                404 => "itemNotFound",
                409 => "nameAlreadyExists",
                _ => "generalException",
            },
            SimError::Io(_) | SimError::Store(_) => "generalException",
        }
    }

    /// SharePoint REST error code (`"{hresult}, {exception type}"`).
    pub fn sp_code(&self) -> &'static str {
        match self {
            SimError::NotFound(_) | SimError::Gone(_) => {
                "-2147024894, System.IO.FileNotFoundException"
            }
            SimError::NameAlreadyExists(_) => "-2130575257, Microsoft.SharePoint.SPException",
            SimError::InvalidRequest(_)
            | SimError::TooLarge(_)
            | SimError::RangeNotSatisfiable(_) => {
                "-1, Microsoft.SharePoint.Client.InvalidClientQueryException"
            }
            SimError::Unauthenticated(_) | SimError::AccessDenied(_) => {
                "-2147024891, System.UnauthorizedAccessException"
            }
            SimError::MethodNotAllowed => "-1, Microsoft.SharePoint.Client.ClientServiceException",
            SimError::Sp { code, .. } => code,
            _ => "-2146232832, Microsoft.SharePoint.SPException",
        }
    }
}

impl From<redb::Error> for SimError {
    fn from(e: redb::Error) -> Self {
        SimError::Store(e.to_string())
    }
}

macro_rules! store_err {
    ($($t:ty),*) => {$(
        impl From<$t> for SimError {
            fn from(e: $t) -> Self { SimError::Store(e.to_string()) }
        }
    )*};
}
store_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Result alias.
pub type SimResult<T> = Result<T, SimError>;
