//! JSON request bodies that fail with a problem+json naming the field.
//!
//! axum's own `Json` extractor answers with plain text; ours answers with the field path and
//! what is wrong, using `serde_path_to_error` so `/packageInfo/weight` is reported, not
//! "invalid type at line 1 column 97".

use axum::extract::{FromRequest, Request};
use axum::http::header;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::problem::Problem;

/// A JSON body deserialised into `T`, or a problem naming what is wrong.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_json_bytes(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Checks the content type and reads the body (bounded by the body-limit layer).
pub async fn read_json_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Problem> {
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let is_json = content_type
        .split(';')
        .next()
        .map(str::trim)
        .is_some_and(|mime| mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json"));
    if !is_json {
        return Err(Problem::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected a body with Content-Type: application/json",
        ));
    }
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        let status = rejection.status();
        if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(status, "request body is larger than the limit")
        } else {
            Problem::new(status, rejection.body_text())
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::bad_request("request body is empty; a JSON object is required"));
    }
    Ok(bytes)
}

/// Parses JSON; syntax errors are 400, shape errors (types, missing fields, enums) 422 with the path.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = json_pointer(&err.path().to_string());
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            Problem::bad_request(format!("malformed JSON: {inner}"))
        } else {
            Problem::invalid_field(&path, strip_position(&inner.to_string()))
        }
    })
}

/// `packageInfo.size` → `/packageInfo/size`; the root (`.`) → `/`.
fn json_pointer(path: &str) -> String {
    if path == "." {
        return "/".to_owned();
    }
    let mut pointer = String::new();
    for segment in path.split('.') {
        pointer.push('/');
        pointer.push_str(segment.trim_start_matches('[').trim_end_matches(']'));
    }
    pointer
}

/// serde_json appends " at line 1 column 42"; the field path already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(idx) => message[..idx].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        inner: Inner,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        weight: f64,
    }

    #[test]
    fn wrong_type_names_the_nested_field() {
        let problem = parse_json::<Outer>(br#"{"inner":{"weight":"heavy"}}"#).unwrap_err();
        assert_eq!(problem.status, 422);
        assert!(problem.errors.contains_key("/inner/weight"), "{problem:?}");
    }

    #[test]
    fn malformed_json_is_bad_request() {
        let problem = parse_json::<Outer>(br#"{"inner": "#).unwrap_err();
        assert_eq!(problem.status, 400);
    }
}
