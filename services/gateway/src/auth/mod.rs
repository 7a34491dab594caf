//! Authentication at the gateway: every route whose policy is `credential` needs
//! `Authorization: Bearer <credential>`, an API key (`fdk_…`, verified by the account service)
//! or a JWT. The gateway verifies it once and forwards the caller as a signed identity
//! (`platform::identity`).

pub mod api_key;
pub mod jwt;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use platform::Problem;
use platform::identity::Identity;

pub use api_key::ApiKeys;
pub use jwt::{JwtSettings, JwtVerifier};

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No usable `Authorization: Bearer` header.
    Missing,
    /// A credential that is not accepted, and why (without naming keys).
    Invalid(String),
    /// The account service could not be asked: not the caller's fault, so not a 401.
    Unavailable,
}

impl AuthError {
    pub fn invalid(why: impl Into<String>) -> Self {
        Self::Invalid(why.into())
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let (detail, error) = match self {
            AuthError::Unavailable => {
                return Problem::unavailable("credentials cannot be verified right now; retry shortly", 1)
                    .into_response();
            }
            AuthError::Missing => {
                ("this route needs a credential: send Authorization: Bearer <API key or token>".to_owned(), None)
            }
            AuthError::Invalid(why) => (why, Some("invalid_token")),
        };
        let mut response = Problem::new(StatusCode::UNAUTHORIZED, detail).into_response();
        // RFC 6750: the scheme, and the error code once a credential was sent.
        let challenge = match error {
            Some(code) => format!("Bearer realm=\"fabrikam\", error=\"{code}\""),
            None => "Bearer realm=\"fabrikam\"".to_owned(),
        };
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_str(&challenge).expect("ASCII challenge"));
        response
    }
}

/// Who the caller is, and what to rate-limit them by.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: Identity,
    /// The API key's id, or `jwt:<sub>`; for logs.
    pub credential: String,
}

/// The configured ways to authenticate.
pub struct Authenticator {
    pub api_keys: ApiKeys,
    pub jwt: Option<JwtVerifier>,
}

impl Authenticator {
    /// Authenticates the request's bearer credential.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let credential = bearer(headers)?;
        if credential.starts_with(api_key::PREFIX) {
            let key = self.api_keys.verify(credential).await?;
            return Ok(Caller { identity: key.identity(), credential: format!("key:{}", key.key_id) });
        }
        let Some(jwt) = &self.jwt else {
            return Err(AuthError::invalid("the credential is not a valid API key"));
        };
        let identity = jwt.verify(credential)?;
        let credential = format!("jwt:{}", identity.user_id.as_deref().unwrap_or(""));
        Ok(Caller { identity, credential })
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers.get(header::AUTHORIZATION).ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::invalid("the Authorization header is not readable"))?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::invalid("expected Authorization: Bearer <token>"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::invalid("expected Authorization: Bearer <token>"));
    }
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bearer_tokens_only() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), Err(AuthError::Missing));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer  fdk_a_b "));
        assert_eq!(bearer(&headers), Ok("fdk_a_b"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic dXNlcjpwdw=="));
        assert!(matches!(bearer(&headers), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn a_401_carries_a_bearer_challenge_and_unavailable_is_a_503() {
        let response = AuthError::invalid("the token has expired").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers()[header::WWW_AUTHENTICATE].to_str().unwrap().starts_with("Bearer"));
        let response = AuthError::Unavailable.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
