//! Accounts, users and credentials: what is valid and how secrets are made and checked. Pure: no I/O.
//!
//! A credential is `<prefix>_<id>_<secret>`: `fdk_` for an account's API key, `fop_` for an
//! operator token. The id finds the stored row; only the SHA-256 of the secret is stored. The
//! secret is 256 random bits, so a fast hash is enough: a slow KDF (argon2, bcrypt) protects
//! guessable passwords against offline guessing, and nobody can guess 2^256 secrets however fast
//! each guess is.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use platform::Problem;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of an account's API key.
pub const API_KEY_PREFIX: &str = "fdk";
/// Prefix of an operator token.
pub const OPERATOR_TOKEN_PREFIX: &str = "fop";

/// Random bytes in a credential's id (hex in the token).
const ID_BYTES: usize = 8;
/// Random bytes in a credential's secret (hex in the token).
const SECRET_BYTES: usize = 32;

/// Longest account or user name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest email address (RFC 5321's path limit).
pub const MAX_EMAIL_CHARS: usize = 254;

/// Whether an account may have deliveries scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    Active,
    Suspended,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            _ => None,
        }
    }
}

/// A business customer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub id: String,
    pub name: String,
    pub status: AccountStatus,
    pub created_at: DateTime<Utc>,
}

/// A person (or system) acting for an account.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub email: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// An API key as listed: everything but its secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    pub key_id: String,
    pub account_id: String,
    pub user_id: Option<String>,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A key to store: its listing and the hash of its secret.
#[derive(Debug, Clone, PartialEq)]
pub struct NewKey {
    pub info: KeyInfo,
    pub secret_sha256: String,
}

/// A stored key as verification needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredKey {
    pub info: KeyInfo,
    pub secret_sha256: String,
    pub account_status: AccountStatus,
}

/// An operator token to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOperator {
    pub id: String,
    pub secret_sha256: String,
    pub created_at: DateTime<Utc>,
}

/// A credential just made: the text handed out once, and what the store keeps.
pub struct Issued {
    pub id: String,
    /// `<prefix>_<id>_<secret>`; shown to its owner once and never stored or logged.
    pub token: String,
    pub secret_sha256: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("id", &self.id).field("token", &"[redacted]").finish()
    }
}

/// A fresh credential with `prefix` (`fdk` or `fop`), from the OS-seeded thread RNG.
pub fn issue(prefix: &str) -> Issued {
    let id: [u8; ID_BYTES] = rand::random();
    let secret: [u8; SECRET_BYTES] = rand::random();
    let (id, secret) = (hex::encode(id), hex::encode(secret));
    Issued { token: format!("{prefix}_{id}_{secret}"), secret_sha256: hash_secret(&secret), id }
}

/// The id and secret of a `<prefix>_<id>_<secret>` token, or `None` when it is not one.
pub fn parse_token<'t>(token: &'t str, prefix: &str) -> Option<(&'t str, &'t str)> {
    let rest = token.strip_prefix(prefix)?.strip_prefix('_')?;
    let (id, secret) = rest.split_once('_')?;
    let is_hex = |s: &str, bytes: usize| s.len() == bytes * 2 && s.bytes().all(|b| b.is_ascii_hexdigit());
    (is_hex(id, ID_BYTES) && is_hex(secret, SECRET_BYTES)).then_some((id, secret))
}

/// Hex SHA-256 of a secret: what the store keeps.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` hashes to `stored`, in time that does not depend on where they differ.
pub fn secret_matches(secret: &str, stored_sha256: &str) -> bool {
    constant_time_eq(hash_secret(secret).as_bytes(), stored_sha256.as_bytes())
}

/// Compares every byte whatever the first difference, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// `POST /api/admin/accounts`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccountCreate {
    pub name: String,
}

/// `PATCH /api/admin/accounts/{id}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccountPatch {
    pub name: Option<String>,
    pub status: Option<String>,
}

/// `POST /api/admin/accounts/{id}/users`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserCreate {
    pub name: String,
    pub email: Option<String>,
}

/// `POST /api/admin/accounts/{id}/keys`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyCreate {
    pub user_id: Option<String>,
    pub name: Option<String>,
}

/// Changes to an account.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AccountChanges {
    pub name: Option<String>,
    pub status: Option<AccountStatus>,
}

type Errors = BTreeMap<String, String>;

fn done<T>(errors: Errors, value: impl FnOnce() -> T) -> Result<T, Problem> {
    if errors.is_empty() { Ok(value()) } else { Err(Problem::invalid_fields(errors)) }
}

/// A trimmed name of 1 to [`MAX_NAME_CHARS`] characters without control characters.
fn check_name(field: &str, name: &str, errors: &mut Errors) -> String {
    let name = name.trim();
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME_CHARS {
        errors.insert(field.to_owned(), format!("must be 1 to {MAX_NAME_CHARS} characters"));
    } else if name.chars().any(char::is_control) {
        errors.insert(field.to_owned(), "must not contain control characters".to_owned());
    }
    name.to_owned()
}

/// A plausible address: one `@` with text on both sides, a dot in the domain, no spaces. The
/// only real check is a mail that arrives; this catches typos and junk.
fn check_email(email: &str, errors: &mut Errors) -> String {
    let email = email.trim();
    let plausible = email.chars().count() <= MAX_EMAIL_CHARS
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if !plausible {
        errors.insert("/email".to_owned(), "must be an email address like name@example.com".to_owned());
    }
    email.to_owned()
}

fn check_status(status: &str, errors: &mut Errors) -> Option<AccountStatus> {
    let parsed = AccountStatus::parse(status.trim());
    if parsed.is_none() {
        errors.insert("/status".to_owned(), format!("unknown status {status:?}, expected active or suspended"));
    }
    parsed
}

/// The name of a new account.
pub fn validate_account(body: AccountCreate) -> Result<String, Problem> {
    let mut errors = Errors::new();
    let name = check_name("/name", &body.name, &mut errors);
    done(errors, || name)
}

/// Changes to an account; at least one field.
pub fn validate_account_patch(body: AccountPatch) -> Result<AccountChanges, Problem> {
    let mut errors = Errors::new();
    let name = body.name.as_deref().map(|n| check_name("/name", n, &mut errors));
    let status = body.status.as_deref().and_then(|s| check_status(s, &mut errors));
    if body.name.is_none() && body.status.is_none() {
        errors.insert("/".to_owned(), "give at least one of name, status".to_owned());
    }
    done(errors, || AccountChanges { name, status })
}

/// The name and email of a new user (an empty email counts as none).
pub fn validate_user(body: UserCreate) -> Result<(String, Option<String>), Problem> {
    let mut errors = Errors::new();
    let name = check_name("/name", &body.name, &mut errors);
    let email = body.email.filter(|e| !e.trim().is_empty()).map(|e| check_email(&e, &mut errors));
    done(errors, || (name, email))
}

/// The user and name of a new key; an empty user or name counts as none.
pub fn validate_key(body: KeyCreate) -> Result<(Option<String>, Option<String>), Problem> {
    let mut errors = Errors::new();
    let user_id = body.user_id.map(|u| u.trim().to_owned()).filter(|u| !u.is_empty());
    let name = body.name.filter(|n| !n.trim().is_empty()).map(|n| check_name("/name", &n, &mut errors));
    done(errors, || (user_id, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_token_parses_back_to_its_id_and_secret() {
        let issued = issue(API_KEY_PREFIX);
        let (id, secret) = parse_token(&issued.token, API_KEY_PREFIX).expect("parses");
        assert_eq!(id, issued.id);
        assert_eq!(hash_secret(secret), issued.secret_sha256);
        assert!(secret_matches(secret, &issued.secret_sha256));
        assert!(!issued.token.contains(&issued.secret_sha256), "the token is not its hash");
        assert!(!format!("{issued:?}").contains(secret), "Debug redacts the token");
    }

    #[test]
    fn tokens_are_random() {
        let (a, b) = (issue(API_KEY_PREFIX), issue(API_KEY_PREFIX));
        assert_ne!(a.id, b.id);
        assert_ne!(a.token, b.token);
    }

    #[test]
    fn a_token_of_the_other_kind_or_malformed_does_not_parse() {
        let operator = issue(OPERATOR_TOKEN_PREFIX);
        assert!(parse_token(&operator.token, API_KEY_PREFIX).is_none());
        assert!(parse_token(&operator.token, OPERATOR_TOKEN_PREFIX).is_some());
        let id = "0123456789abcdef";
        let secret = "ab".repeat(32);
        assert!(parse_token(&format!("fdk_{id}_{secret}"), "fdk").is_some());
        for bad in [
            String::new(),
            "fdk".to_owned(),
            "fdk__".to_owned(),
            format!("fdk_{id}"),
            format!("fdk_{id}_{}", &secret[1..]),
            format!("fdk_{id}_{secret}_"),
            format!("fdk_{id}_{}zz", &secret[2..]),
            format!("fdk-{id}_{secret}"),
            format!("fdk_{}_{secret}", &id[1..]),
            format!("fdkx_{id}_{secret}"),
        ] {
            assert!(parse_token(&bad, "fdk").is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_wrong_secret_does_not_match() {
        let issued = issue(API_KEY_PREFIX);
        let (_, secret) = parse_token(&issued.token, API_KEY_PREFIX).unwrap();
        let mut wrong = secret.to_owned();
        wrong.replace_range(63.., if secret.ends_with('0') { "1" } else { "0" });
        assert!(!secret_matches(&wrong, &issued.secret_sha256));
        assert!(!secret_matches(secret, &issued.secret_sha256[1..]));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn bearer_takes_the_token_of_any_case_of_the_scheme() {
        assert_eq!(bearer("Bearer fop_x_y"), Some("fop_x_y"));
        assert_eq!(bearer("bearer  fop_x_y "), Some("fop_x_y"));
        assert_eq!(bearer("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("fop_x_y"), None);
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(validate_account(AccountCreate { name: "  Contoso ".into() }).unwrap(), "Contoso");
        for bad in ["", "   ", "a\u{0}b"] {
            let problem = validate_account(AccountCreate { name: bad.into() }).unwrap_err();
            assert!(problem.errors.contains_key("/name"), "{bad:?}");
        }
        assert!(validate_account(AccountCreate { name: "x".repeat(MAX_NAME_CHARS) }).is_ok());
        assert!(validate_account(AccountCreate { name: "x".repeat(MAX_NAME_CHARS + 1) }).is_err());
    }

    #[test]
    fn emails_are_checked_and_empty_means_none() {
        let user = |email: &str| validate_user(UserCreate { name: "Ann".into(), email: Some(email.into()) });
        assert_eq!(user("ann@contoso.com").unwrap().1.as_deref(), Some("ann@contoso.com"));
        assert_eq!(user("  ").unwrap().1, None);
        for bad in ["ann", "ann@", "@contoso.com", "ann@contoso", "a b@contoso.com", "ann@@contoso.com", "ann@.com"] {
            assert!(user(bad).unwrap_err().errors.contains_key("/email"), "{bad:?}");
        }
        let both = validate_user(UserCreate { name: String::new(), email: Some("x".into()) }).unwrap_err();
        assert_eq!(both.errors.keys().collect::<Vec<_>>(), ["/email", "/name"]);
    }

    #[test]
    fn patches_name_the_bad_status_and_need_a_field() {
        let patch = |status: &str| AccountPatch { status: Some(status.into()), name: None };
        assert_eq!(validate_account_patch(patch("suspended")).unwrap().status, Some(AccountStatus::Suspended));
        assert_eq!(validate_account_patch(patch("active")).unwrap().status, Some(AccountStatus::Active));
        assert!(validate_account_patch(patch("closed")).unwrap_err().errors.contains_key("/status"));
        assert!(validate_account_patch(AccountPatch::default()).unwrap_err().errors.contains_key("/"));
    }

    #[test]
    fn keys_take_an_optional_user_and_name() {
        assert_eq!(validate_key(KeyCreate::default()).unwrap(), (None, None));
        let key = KeyCreate { user_id: Some(" u1 ".into()), name: Some("ci".into()) };
        assert_eq!(validate_key(key).unwrap(), (Some("u1".into()), Some("ci".into())));
        let long = KeyCreate { user_id: None, name: Some("x".repeat(MAX_NAME_CHARS + 1)) };
        assert!(validate_key(long).unwrap_err().errors.contains_key("/name"));
    }
}
