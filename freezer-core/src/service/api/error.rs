//! The one error of the API's documents module, sorted by what the caller can do about it.
//!
//! Each kind maps to one HTTP status and one of upstream's error titles (falcon's `HTTPError`
//! body `{"title", "description"}`); the description names the field, id or value at fault.
//! An internal failure keeps its detail apart, for the log, never for the response.

use crate::service::store::StoreError;

/// What went wrong, by what the caller can do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request is malformed or a field is invalid (400, "Bad request format").
    BadRequest,
    /// No token, or one that is not valid (any more) (401).
    Unauthorized,
    /// The caller may not do this (403, "Access Forbidden").
    Forbidden,
    /// No such document, or not one the caller may see (404, "Not Found").
    NotFound,
    /// No such action on this resource (405, "Bad Method").
    BadMethod,
    /// The client does not accept JSON (406).
    NotAcceptable,
    /// The document exists already, or belongs to another project (409).
    Conflict,
    /// The body is larger than the server accepts (413).
    TooLarge,
    /// The document refers to something missing or incapable, such as an unregistered
    /// client (422, "Unprocessable Entity").
    Unprocessable,
    /// A trust could not be made for the caller (a delegated role they do not hold, no
    /// service user): upstream's `MissingCredentialError` (422, "Missing required
    /// credentials").
    MissingCredentials,
    /// A concurrent update kept winning, or the identity service could not be asked;
    /// worth a retry (503).
    Unavailable,
    /// The server failed (500); the detail is logged, never returned.
    Internal,
}

impl ErrorKind {
    /// The HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::BadMethod => 405,
            ErrorKind::NotAcceptable => 406,
            ErrorKind::Conflict => 409,
            ErrorKind::TooLarge => 413,
            ErrorKind::Unprocessable => 422,
            ErrorKind::MissingCredentials => 422,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal => 500,
        }
    }

    /// Upstream's error title for the status.
    pub fn title(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "Bad request format",
            ErrorKind::Unauthorized => "Unauthorized",
            ErrorKind::Forbidden => "Access Forbidden",
            ErrorKind::NotFound => "Not Found",
            ErrorKind::BadMethod => "Bad Method",
            ErrorKind::NotAcceptable => "Not Acceptable",
            ErrorKind::Conflict => "Document already existing",
            ErrorKind::TooLarge => "Request body too large",
            ErrorKind::Unprocessable => "Unprocessable Entity",
            ErrorKind::MissingCredentials => "Missing required credentials",
            ErrorKind::Unavailable => "Service Unavailable",
            ErrorKind::Internal => "Internal Server Error",
        }
    }
}

/// An API error: a kind, a description for the caller, and (for internal errors only) a
/// detail for the log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{description}")]
pub struct ApiError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// What the caller reads: names the field, id or value at fault.
    pub description: String,
    /// For the log only (a database error); never sent.
    pub detail: Option<String>,
}

impl ApiError {
    fn new(kind: ErrorKind, description: impl Into<String>) -> Self {
        ApiError {
            kind,
            description: description.into(),
            detail: None,
        }
    }

    /// 401: no token, or not a valid one.
    pub fn unauthorized(description: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, description)
    }

    /// 406: the client does not accept JSON.
    pub fn not_acceptable() -> Self {
        Self::new(
            ErrorKind::NotAcceptable,
            "This API only supports responses encoded as JSON.",
        )
    }

    /// 503: worth a retry later.
    pub fn unavailable(description: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, description)
    }

    /// 400: the request or a field is invalid.
    pub fn bad_request(description: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, description)
    }

    /// 403, with upstream's fixed description.
    pub fn forbidden() -> Self {
        Self::new(
            ErrorKind::Forbidden,
            "You are not allowed to access this resource",
        )
    }

    /// 404: `what` (such as `job 1234`) is not there.
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::NotFound, format!("{what} not found"))
    }

    /// 405: no such action.
    pub fn bad_method(description: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadMethod, description)
    }

    /// 409: the document exists already.
    pub fn conflict(description: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, description)
    }

    /// 413: the body is too large.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            ErrorKind::TooLarge,
            format!("the request body is larger than {limit} bytes"),
        )
    }

    /// 422: the document refers to something missing or incapable.
    pub fn unprocessable(description: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unprocessable, description)
    }

    /// 422 "Missing required credentials": no trust could be made for the caller.
    pub fn missing_credentials(description: impl Into<String>) -> Self {
        Self::new(ErrorKind::MissingCredentials, description)
    }

    /// 500, with a detail for the log only.
    pub fn internal(detail: impl Into<String>) -> Self {
        ApiError {
            kind: ErrorKind::Internal,
            description: "The server failed to handle the request; see its log".into(),
            detail: Some(detail.into()),
        }
    }

    /// The error with a detail for the log only.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Exists(kind, id) => {
                ApiError::conflict(format!("{} {id} already exists", singular(kind.plural())))
            }
            StoreError::NotFound(kind, id) => {
                ApiError::not_found(format!("{} {id}", singular(kind.plural())))
            }
            StoreError::Conflict(kind, id, _) => ApiError::new(
                ErrorKind::Unavailable,
                format!(
                    "{} {id} is being changed by other requests; try again",
                    singular(kind.plural())
                ),
            ),
            StoreError::Backend(detail) => ApiError::internal(detail),
        }
    }
}

impl From<crate::service::auth::trusts::TrustError> for ApiError {
    fn from(e: crate::service::auth::trusts::TrustError) -> Self {
        use crate::service::auth::trusts::TrustError;
        match e {
            TrustError::MissingCredentials(m) => ApiError::missing_credentials(m),
            TrustError::Refused(m) => ApiError::new(
                ErrorKind::MissingCredentials,
                format!(
                    "Missing required credentials: the identity service refused the trust: {m}"
                ),
            ),
            TrustError::Unavailable(m) => {
                ApiError::unavailable("the identity service could not make the trust")
                    .with_detail(m)
            }
        }
    }
}

fn singular(plural: &str) -> &str {
    plural.strip_suffix('s').unwrap_or(plural)
}
