//! Connection tokens: JWTs signed with an HS256 secret or an RS256/ES256 key, whose `sub`
//! claim names the user, whose optional `info` is shown to others (presence) and whose
//! optional `channels` grants channels (see the `rules` module).
//!
//! `exp` is checked when present (with a few seconds of leeway for clock skew); a token
//! without one does not expire. A connection whose token expires must present a fresh one
//! (`refresh`) before then, or it is disconnected. Without a token, a client is anonymous
//! if the config allows it, and refused otherwise.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::codes::{ErrorCode, Refusal};
use crate::redact::hidden;

/// A token key that cannot be used: a file that cannot be read, or that holds no RSA or EC
/// public key.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct KeyError(String);

/// Connection tokens (JWT): who a client is, for every protocol (the `[auth]` settings).
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Whether a client without a token is let in, as an anonymous user. A token that is
    /// given is checked either way.
    pub anonymous: bool,
    /// Secret of HS256 tokens. Empty: none accepted.
    pub hmac_secret: String,
    /// PEM file with the public key of RS256 or ES256 tokens. Empty: none accepted.
    pub public_key_file: String,
    /// The `aud` every token must name. Empty: tokens with an `aud` are refused.
    pub audience: String,
    /// The `iss` every token must carry. Empty: not checked.
    pub issuer: String,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("anonymous", &self.anonymous)
            .field("hmac_secret", &hidden(&self.hmac_secret))
            .field("public_key_file", &self.public_key_file)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            anonymous: true,
            hmac_secret: String::new(),
            public_key_file: String::new(),
            audience: String::new(),
            issuer: String::new(),
        }
    }
}

/// Seconds a token may be past its `exp` and still be taken, for clocks that disagree.
const LEEWAY_SECS: u64 = 5;

/// Largest `info` a token may carry, as JSON: it is copied into every presence entry and
/// join event of the connection.
pub const MAX_INFO_BYTES: usize = 4096;

/// Who a client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id (`sub`); empty for an anonymous client.
    pub user: String,
    /// What others see of the client (`info`), as JSON.
    pub info: Option<String>,
    /// Channels the token grants: exact names, or prefixes ending in `*`.
    pub grants: Vec<String>,
    /// When the token expires, in Unix seconds.
    pub expires_at: Option<u64>,
}

impl Identity {
    pub fn anonymous() -> Self {
        Self {
            user: String::new(),
            info: None,
            grants: Vec::new(),
            expires_at: None,
        }
    }

    /// Whether the token grants `channel`.
    pub fn grants(&self, channel: &str) -> bool {
        self.grants
            .iter()
            .any(|grant| crate::channel::matches(grant, channel))
    }

    /// Seconds until the token stops being accepted (its `exp` and the clock-skew
    /// leeway), 0 once it has; `None` if it never does.
    pub fn expires_in(&self) -> Option<u64> {
        let now = crate::time::unix_micros() / 1_000_000;
        self.expires_at
            .map(|at| at.saturating_add(LEEWAY_SECS).saturating_sub(now))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    #[error("a token is required")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl From<AuthError> for Refusal {
    fn from(error: AuthError) -> Self {
        let code = match error {
            AuthError::Expired => ErrorCode::TokenExpired,
            AuthError::Missing | AuthError::Invalid(_) => ErrorCode::Unauthorized,
        };
        Refusal::new(code, error.to_string())
    }
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: String,
    #[serde(default)]
    info: Option<serde_json::Value>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    exp: Option<u64>,
}

/// Checks tokens against the configured keys.
pub struct Verifier {
    keys: Vec<(DecodingKey, Validation)>,
    anonymous: bool,
    audience_configured: bool,
}

impl Verifier {
    /// Reads the keys of `config`; fails on a key file that cannot be read or parsed.
    /// (Whether clients can be admitted at all is `Config::validate`'s
    /// question: a connect hook may admit them instead of tokens.)
    pub fn new(config: &AuthConfig) -> Result<Self, KeyError> {
        let invalid = KeyError;
        let mut keys = Vec::new();
        if !config.hmac_secret.is_empty() {
            let key = DecodingKey::from_secret(config.hmac_secret.as_bytes());
            keys.push((key, validation(Algorithm::HS256, config)));
        }
        if !config.public_key_file.is_empty() {
            let path = &config.public_key_file;
            let pem = std::fs::read(path)
                .map_err(|e| invalid(format!("auth.public_key_file {path}: {e}")))?;
            let key = match DecodingKey::from_rsa_pem(&pem) {
                Ok(key) => (key, validation(Algorithm::RS256, config)),
                Err(_) => DecodingKey::from_ec_pem(&pem)
                    .map(|key| (key, validation(Algorithm::ES256, config)))
                    .map_err(|_| {
                        invalid(format!(
                            "auth.public_key_file {path}: not an RSA or EC public key in PEM"
                        ))
                    })?,
            };
            keys.push(key);
        }
        Ok(Self {
            keys,
            anonymous: config.anonymous,
            audience_configured: !config.audience.is_empty(),
        })
    }

    /// Who the holder of `token` is.
    pub fn verify(&self, token: Option<&str>) -> Result<Identity, AuthError> {
        let Some(token) = token else {
            return match self.anonymous {
                true => Ok(Identity::anonymous()),
                false => Err(AuthError::Missing),
            };
        };
        // A token that was given is never downgraded to anonymous access, empty or not.
        if token.is_empty() {
            return Err(AuthError::Invalid("the token is empty".into()));
        }
        if self.keys.is_empty() {
            return Err(AuthError::Invalid("no token keys are configured".into()));
        }
        let mut error = AuthError::Invalid("no key matches".into());
        for (key, validation) in &self.keys {
            match decode::<Claims>(token, key, validation) {
                Ok(data) => {
                    let claims = data.claims;
                    let info = claims.info.map(|info| info.to_string());
                    if info
                        .as_ref()
                        .is_some_and(|info| info.len() > MAX_INFO_BYTES)
                    {
                        let why = format!("the token's info exceeds {MAX_INFO_BYTES} bytes");
                        return Err(AuthError::Invalid(why));
                    }
                    return Ok(Identity {
                        user: claims.sub,
                        info,
                        grants: claims.channels,
                        expires_at: claims.exp,
                    });
                }
                Err(e) if *e.kind() == ErrorKind::ExpiredSignature => {
                    return Err(AuthError::Expired);
                }
                Err(e) if *e.kind() == ErrorKind::ImmatureSignature => {
                    return Err(AuthError::Invalid(
                        "the token is not valid yet (nbf)".into(),
                    ));
                }
                Err(e) if *e.kind() == ErrorKind::InvalidAudience => {
                    let why = match self.audience_configured {
                        true => "the token's aud does not name this service",
                        false => "the token has an aud claim: set auth.audience to accept it",
                    };
                    error = AuthError::Invalid(why.into());
                }
                Err(e) => error = AuthError::Invalid(e.to_string()),
            }
        }
        Err(error)
    }
}

/// What a token must satisfy besides its signature: `exp` and `nbf` when present, and
/// the configured `aud` and `iss`, which a token must then carry. A token with an `aud`
/// is refused when no audience is configured (RFC 7519 §4.1.3: a recipient not named in
/// it must reject it).
fn validation(algorithm: Algorithm, config: &AuthConfig) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.required_spec_claims.clear();
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    if !config.audience.is_empty() {
        validation.set_audience(&[&config.audience]);
        validation.required_spec_claims.insert("aud".into());
    }
    if !config.issuer.is_empty() {
        validation.set_issuer(&[&config.issuer]);
        validation.required_spec_claims.insert("iss".into());
    }
    validation
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn hs256(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn verifier(anonymous: bool) -> Verifier {
        Verifier::new(&AuthConfig {
            anonymous,
            hmac_secret: "s3cret".into(),
            ..AuthConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn tokens_say_who_the_client_is() {
        let now = crate::time::unix_micros() / 1_000_000;
        let token = hs256(
            json!({"sub": "alice", "exp": now + 60, "info": {"n": 1}}),
            "s3cret",
        );
        let identity = verifier(false).verify(Some(&token)).unwrap();
        assert_eq!(identity.user, "alice");
        assert_eq!(identity.info.as_deref(), Some(r#"{"n":1}"#));
        assert_eq!(identity.expires_at, Some(now + 60));
        assert!((64..=65).contains(&identity.expires_in().unwrap()));
        // No `exp`: the token does not expire.
        assert!(
            verifier(false)
                .verify(Some(&hs256(json!({"sub": "bob"}), "s3cret")))
                .is_ok()
        );
    }

    #[test]
    fn bad_tokens_are_refused_with_a_reason() {
        let now = crate::time::unix_micros() / 1_000_000;
        let strict = verifier(false);
        assert_eq!(strict.verify(None), Err(AuthError::Missing));
        let expired = hs256(json!({"sub": "alice", "exp": now - 600}), "s3cret");
        assert_eq!(strict.verify(Some(&expired)), Err(AuthError::Expired));
        let forged = hs256(json!({"sub": "alice"}), "guess");
        assert!(matches!(
            strict.verify(Some(&forged)),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            strict.verify(Some("garbage")),
            Err(AuthError::Invalid(_))
        ));
        // Anonymous access lets in clients without a token, not clients with a bad one.
        let open = verifier(true);
        assert_eq!(open.verify(None).unwrap().user, "");
        assert!(open.verify(Some(&forged)).is_err());
    }

    #[test]
    fn token_times_are_checked_without_overflow() {
        let now = crate::time::unix_micros() / 1_000_000;
        let strict = verifier(false);
        let later = hs256(json!({"sub": "alice", "nbf": now + 3600}), "s3cret");
        assert!(matches!(
            strict.verify(Some(&later)),
            Err(AuthError::Invalid(_))
        ));
        let forever = hs256(json!({"sub": "alice", "exp": u64::MAX}), "s3cret");
        let identity = strict.verify(Some(&forever)).unwrap();
        assert!(identity.expires_in().unwrap() > 1 << 60);
        let chatty = hs256(
            json!({"sub": "a", "info": "x".repeat(MAX_INFO_BYTES)}),
            "s3cret",
        );
        let refusal = strict.verify(Some(&chatty)).unwrap_err();
        assert!(refusal.to_string().contains("info"), "{refusal}");
        // A token that was given is checked, never taken as none.
        assert!(matches!(
            verifier(true).verify(Some("")),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn audience_and_issuer_are_checked_when_configured() {
        let open = verifier(false);
        let with_aud = hs256(json!({"sub": "a", "aud": "herald", "iss": "idp"}), "s3cret");
        let refusal = open.verify(Some(&with_aud)).unwrap_err();
        assert!(refusal.to_string().contains("auth.audience"), "{refusal}");
        let strict = Verifier::new(&AuthConfig {
            anonymous: false,
            hmac_secret: "s3cret".into(),
            audience: "herald".into(),
            issuer: "idp".into(),
            ..AuthConfig::default()
        })
        .unwrap();
        assert_eq!(strict.verify(Some(&with_aud)).unwrap().user, "a");
        for claims in [
            json!({"sub": "a", "aud": "other", "iss": "idp"}),
            json!({"sub": "a", "aud": "herald", "iss": "other"}),
            json!({"sub": "a", "iss": "idp"}),
            json!({"sub": "a", "aud": "herald"}),
        ] {
            let token = hs256(claims.clone(), "s3cret");
            assert!(strict.verify(Some(&token)).is_err(), "{claims}");
        }
    }

    #[test]
    fn tokens_grant_channels() {
        let token = hs256(
            json!({"sub": "svc", "channels": ["news", "dm:*"]}),
            "s3cret",
        );
        let identity = verifier(false).verify(Some(&token)).unwrap();
        assert!(identity.grants("news"));
        assert!(identity.grants("dm:#alice,bob"));
        assert!(!identity.grants("news:x"));
        assert!(!Identity::anonymous().grants("news"));
    }
}
