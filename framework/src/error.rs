//! The framework's error type: what failed, in words a user can act on, and
//! a stable code and class that the portal API turns into a status.

use crate::package::PackageError;
use crate::runtime::RuntimeError;

/// How a caller should treat an error (the portal API maps it to a status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request is wrong; repeating it will not help.
    BadRequest,
    /// What the request names does not exist.
    NotFound,
    /// The request does not fit the current state (e.g. cancel a finished job).
    Conflict,
    /// The request is too large.
    TooLarge,
    /// The request is not signed, or not signed right.
    Unauthorized,
    /// The caller may not do this.
    Forbidden,
    /// The caller's account is over one of its quotas.
    QuotaExceeded,
    /// Something failed inside the service.
    Internal,
}

/// Everything that can go wrong in the framework.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A named thing does not exist (or is not visible to the caller).
    #[error("{what} `{id}` was not found")]
    NotFound {
        /// What kind of thing ("job", "application", ...).
        what: &'static str,
        /// Its name or id.
        id: String,
    },
    /// The request is malformed or breaks a rule; the message says which.
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// A request or upload is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// A published zip or its manifest, or a job's parameters, are invalid.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// A published application image zip is invalid.
    #[error("the application image is not acceptable: {0}")]
    Image(PackageError),
    /// A published component is unusable.
    #[error(transparent)]
    Component(#[from] RuntimeError),
    /// The file store failed.
    #[error("file storage failed: {0}")]
    Storage(#[from] object_store::Error),
    /// The service's configuration is unusable (a storage location, say);
    /// the message says what to change.
    #[error("{0}")]
    Config(String),
    /// The state database failed.
    #[error("the state database failed: {0}")]
    Database(#[from] sqlx::Error),
    /// A schema migration failed.
    #[error("migrating the state database failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Local file I/O failed.
    #[error("I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The request's signature was refused.
    #[error(transparent)]
    Unauthorized(#[from] crate::auth::AuthError),
    /// The caller's role does not allow the request.
    #[error("{0}")]
    Forbidden(String),
    /// The request would take the account over a quota; the message says
    /// which.
    #[error("{0}")]
    QuotaExceeded(String),
    /// An autoscale formula does not parse or check.
    #[error("the autoscale formula is refused: {0}")]
    Formula(crate::autoscale::FormulaError),
    /// A node's conversation with its coordinator failed.
    #[error(transparent)]
    Node(#[from] crate::protocol::NodeError),
    /// The service is shutting down.
    #[error("the service is shutting down")]
    ShuttingDown,
    /// An internal invariant broke.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A stable snake_case code for the error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::Invalid(_) => "invalid_request",
            Self::Conflict(_) => "conflict",
            Self::TooLarge(_) => "too_large",
            Self::Package(e) | Self::Image(e) => e.kind(),
            Self::Component(e) => e.code(),
            Self::Storage(_) => "storage_error",
            Self::Config(_) => "invalid_config",
            Self::Database(_) | Self::Migrate(_) => "database_error",
            Self::Io(_) => "io_error",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::QuotaExceeded(_) => "quota_exceeded",
            Self::Formula(_) => "invalid_formula",
            Self::Node(e) => e.code(),
            Self::ShuttingDown => "shutting_down",
            Self::Internal(_) => "internal_error",
        }
    }

    /// How a caller should treat the error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::NotFound { .. } => ErrorClass::NotFound,
            Self::Invalid(_) | Self::Formula(_) => ErrorClass::BadRequest,
            Self::Conflict(_) => ErrorClass::Conflict,
            Self::TooLarge(_) => ErrorClass::TooLarge,
            Self::Unauthorized(_) => ErrorClass::Unauthorized,
            Self::Forbidden(_) => ErrorClass::Forbidden,
            Self::QuotaExceeded(_) => ErrorClass::QuotaExceeded,
            Self::Package(e) | Self::Image(e) if e.is_too_large() => ErrorClass::TooLarge,
            Self::Package(PackageError::Io(_)) | Self::Image(PackageError::Io(_)) => {
                ErrorClass::Internal
            }
            Self::Package(_) | Self::Image(_) => ErrorClass::BadRequest,
            Self::Component(e) if e.is_invalid_component() => ErrorClass::BadRequest,
            Self::Component(_)
            | Self::Storage(_)
            | Self::Config(_)
            | Self::Database(_)
            | Self::Migrate(_)
            | Self::Io(_)
            | Self::Node(_)
            | Self::ShuttingDown
            | Self::Internal(_) => ErrorClass::Internal,
        }
    }

    /// A not-found error.
    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound {
            what,
            id: id.into(),
        }
    }
}
