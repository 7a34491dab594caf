//! RFC 9457 problem details: the one error shape every Fabrikam service answers with.
//!
//! Handlers return `Result<_, Problem>`; bad input names the offending field in `errors`
//! so a client can fix its request without reading our logs.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// The media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An `application/problem+json` document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Field path (JSON pointer style, e.g. `/packageInfo/size`) to what is wrong with it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, String>,
    /// Seconds after which a retry may succeed; sent as the `Retry-After` header, not in the body.
    #[serde(skip)]
    pub retry_after_secs: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: Some(detail.into()),
            instance: None,
            errors: BTreeMap::new(),
            retry_after_secs: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, detail)
    }

    /// A request whose fields are wrong; `errors` names each one.
    pub fn invalid_fields(errors: BTreeMap<String, String>) -> Self {
        let fields: Vec<&str> = errors.keys().map(String::as_str).collect();
        let mut problem =
            Self::new(StatusCode::UNPROCESSABLE_ENTITY, format!("invalid request fields: {}", fields.join(", ")));
        problem.kind = "https://fabrikam.example/problems/validation".to_owned();
        problem.title = "Request validation failed".to_owned();
        problem.errors = errors;
        problem
    }

    /// One bad field, e.g. a query parameter.
    pub fn invalid_field(field: &str, what: impl Into<String>) -> Self {
        Self::invalid_fields(BTreeMap::from([(field.to_owned(), what.into())]))
    }

    /// A dependency (store, bus) failed; the caller may retry.
    pub fn unavailable(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut problem = Self::new(StatusCode::SERVICE_UNAVAILABLE, detail);
        problem.retry_after_secs = Some(retry_after_secs);
        problem
    }

    /// An unexpected failure. The detail stays generic; the cause goes to the log once, here.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error; it has been logged")
    }

    pub fn with_type(mut self, kind: impl Into<String>) -> Self {
        self.kind = kind.into();
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.title)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let retry_after = self.retry_after_secs;
        let mut response = (status, Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<sqlx::Error> for Problem {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => {
                tracing::warn!(error = %err, "store unavailable");
                Problem::unavailable("the store is unavailable; try again", 1)
            }
            other => Problem::internal(other),
        }
    }
}
