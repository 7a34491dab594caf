//! JSON Web Tokens for user-facing clients: HS256 with a shared secret, RS256 and ES256 with
//! the public keys of a JWKS file. The issuer and audience are checked when configured, `exp`
//! is always required, the account comes from a configurable claim and the user from `sub`.

use std::path::Path;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use platform::identity::Identity;
use serde_json::{Map, Value};

use super::AuthError;

/// Checks tokens against the configured keys and claims.
pub struct JwtVerifier {
    hs256: Option<DecodingKey>,
    /// `kid` (if any) and key of each usable JWKS entry, with its algorithm.
    keys: Vec<(Option<String>, Algorithm, DecodingKey)>,
    issuer: Option<String>,
    audience: Option<String>,
    account_claim: String,
    leeway_secs: u64,
}

/// How tokens are verified.
#[derive(Debug, Clone, Default)]
pub struct JwtSettings {
    pub hs256_secret: Option<String>,
    pub jwks_file: Option<std::path::PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub account_claim: String,
    pub leeway_secs: u64,
}

impl JwtVerifier {
    /// `None` when neither a secret nor a key set is configured (API keys only).
    pub fn new(settings: &JwtSettings) -> anyhow::Result<Option<Self>> {
        let hs256 = match settings.hs256_secret.as_deref() {
            Some(secret) if secret.len() < 32 => {
                anyhow::bail!(
                    "--jwt-hs256-secret must be at least 32 bytes (HS256 keys shorter than the hash are weak)"
                )
            }
            Some(secret) => Some(DecodingKey::from_secret(secret.as_bytes())),
            None => None,
        };
        let keys = match &settings.jwks_file {
            Some(path) => load_jwks(path)?,
            None => Vec::new(),
        };
        if hs256.is_none() && keys.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            hs256,
            keys,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            account_claim: settings.account_claim.clone(),
            leeway_secs: settings.leeway_secs,
        }))
    }

    /// The caller a token names, if the token is valid now.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::invalid("the token is malformed"))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::RS256 | Algorithm::ES256 => self
                .keys
                .iter()
                .find(|(kid, alg, _)| *alg == header.alg && (header.kid.is_none() || *kid == header.kid))
                .map(|(_, _, key)| key),
            _ => None,
        }
        .ok_or_else(|| AuthError::invalid("the token is not signed by a key this gateway trusts"))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway_secs;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                validation.required_spec_claims.insert("iss".to_owned());
            }
            None => validation.iss = None,
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".to_owned());
            }
            None => validation.validate_aud = false,
        }
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
            .map_err(|e| AuthError::invalid(describe(e.kind())))?
            .claims;
        let text = |name: &str| claims.get(name).and_then(Value::as_str).filter(|s| !s.is_empty());
        let account_id = text(&self.account_claim)
            .ok_or_else(|| AuthError::invalid(format!("the token has no {} claim", self.account_claim)))?;
        Ok(Identity { account_id: account_id.to_owned(), user_id: text("sub").map(str::to_owned) })
    }
}

/// What is wrong with a token, without naming keys.
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
        ErrorKind::ImmatureSignature => "the token is not valid yet".to_owned(),
        ErrorKind::InvalidIssuer => "the token's issuer is not accepted".to_owned(),
        ErrorKind::InvalidAudience => "the token's audience is not accepted".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
        ErrorKind::InvalidSignature => "the token's signature is not valid".to_owned(),
        _ => "the token is not valid".to_owned(),
    }
}

/// The RS256 and ES256 keys of a JWKS file; other entries are skipped with a warning.
fn load_jwks(path: &Path) -> anyhow::Result<Vec<(Option<String>, Algorithm, DecodingKey)>> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("--jwt-jwks-file {}: {e}", path.display()))?;
    let set: JwkSet =
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("--jwt-jwks-file {}: {e}", path.display()))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Algorithm::ES256,
            _ => {
                tracing::warn!(kid = ?jwk.common.key_id, "skipping a JWKS key that is neither RSA nor P-256");
                continue;
            }
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| anyhow::anyhow!("--jwt-jwks-file: a key is unusable: {e}"))?;
        keys.push((jwk.common.key_id.clone(), alg, key));
    }
    if keys.is_empty() {
        anyhow::bail!("--jwt-jwks-file {}: no RS256 or ES256 key in it", path.display());
    }
    Ok(keys)
}
