//! JWT verification for the Socket.IO CONNECT packet.
//!
//! An [`Authenticator`] is built once from an [`AuthConfig`] and shared (it is cheap to clone).
//! It accepts exactly one algorithm: HS256 with a shared secret, or RS256 / ES256 with a PEM
//! public key (the key type picks the algorithm). Anything else in the token header, `none`
//! included, is refused before any signature work. Header fields that point at other keys
//! (`jku`, `x5u`, `jwk`, `kid`) are ignored: the configured key is the only key, and nothing is
//! ever fetched.
//!
//! Claims: `exp` (a number; any other type counts as missing) and `sub` (non-empty string) are
//! required, else [`AuthError::MissingClaim`]; `nbf` is checked when
//! present; `iss` / `aud` are required and checked only when configured; the leeway applies to
//! `exp` and `nbf`. The optional `rooms` claim must be an array of strings; any other shape makes
//! the token [`AuthError::Malformed`], so an issuer's mistake is visible instead of silently
//! granting fewer rooms.
//!
//! Every failure maps to one [`AuthError`] whose [`AuthError::reason`] is the stable
//! `auth_failed` reason sent to the client.

use std::fmt;
use std::sync::Arc;
use switchboard_protocol::events::check_id;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore as _;
use serde::Deserialize;
use serde_json::Value;

/// Longest token accepted, in bytes; longer ones are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Shortest RSA modulus accepted for RS256, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Where the verification key comes from; it also fixes the one accepted algorithm.
#[derive(Clone)]
pub enum KeySource {
    /// Shared secret: HS256.
    Secret(Vec<u8>),
    /// PEM public key (`PUBLIC KEY` or `RSA PUBLIC KEY`): RS256 for RSA, ES256 for EC P-256.
    PublicKeyPem(Vec<u8>),
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret: configs end up in logs.
        match self {
            Self::Secret(_) => f.write_str("Secret([redacted])"),
            Self::PublicKeyPem(pem) => write!(f, "PublicKeyPem({} bytes)", pem.len()),
        }
    }
}

/// Everything needed to build an [`Authenticator`].
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Verification key; decides the algorithm.
    pub key: KeySource,
    /// Required `iss` value; `None` = not checked.
    pub issuer: Option<String>,
    /// Required `aud` value (one of the token's audiences); `None` = not checked.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

/// Who a verified token says the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The `sub` claim.
    pub user_id: String,
    /// The `exp` claim, unix seconds (the session ends at `expires_at + leeway`).
    pub expires_at: u64,
    /// The exact room names of the `rooms` claim (joined at connect), duplicates removed, in
    /// token order; empty when absent.
    pub rooms: Vec<String>,
    /// The prefix patterns of the `rooms` claim (`"doc:*"` → `"doc:"`): rooms the client may
    /// join with `room:join`.
    pub room_patterns: Vec<String>,
    /// The `did` claim: the one device id this token may connect as.
    pub device: Option<String>,
    /// Every claim of the token (for the backend's `connect` hook).
    pub claims: serde_json::Map<String, Value>,
}

impl Identity {
    /// Whether the `rooms` claim lets the client join `room` (by name or by pattern).
    pub fn may_join(&self, room: &str) -> bool {
        self.rooms.iter().any(|r| r == room)
            || self
                .room_patterns
                .iter()
                .any(|p| room.starts_with(p.as_str()))
    }
}

/// Why a token was refused; [`AuthError::reason`] is the wire value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was presented.
    #[error("no token")]
    MissingToken,
    /// Not a well-formed JWT (bad shape, base64, JSON, or claim type).
    #[error("malformed token")]
    Malformed,
    /// The signature does not match the configured key.
    #[error("invalid signature")]
    InvalidSignature,
    /// The header names an algorithm other than the configured one.
    #[error("algorithm not accepted")]
    InvalidAlgorithm,
    /// `exp` (plus leeway) is in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` (minus leeway) is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` differs from the configured issuer.
    #[error("issuer not accepted")]
    InvalidIssuer,
    /// `aud` does not contain the configured audience.
    #[error("audience not accepted")]
    InvalidAudience,
    /// A required claim (`exp`, `sub`, or a configured `iss` / `aud`) is absent or empty.
    #[error("required claim missing")]
    MissingClaim,
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("token too large")]
    TokenTooLarge,
    /// `sub` is not a valid user id (over 255 bytes, or control characters).
    #[error("the subject is not a valid user id")]
    InvalidSubject,
}

impl AuthError {
    /// Stable reason sent in `44{"message":"auth_failed","data":{"reason":…}}`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::Malformed => "malformed",
            Self::InvalidSignature => "invalid_signature",
            Self::InvalidAlgorithm => "invalid_algorithm",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::InvalidIssuer => "invalid_issuer",
            Self::InvalidAudience => "invalid_audience",
            Self::MissingClaim => "missing_claim",
            Self::TokenTooLarge => "token_too_large",
            Self::InvalidSubject => "invalid_subject",
        }
    }
}

/// Why an [`AuthConfig`] cannot be used; reported once at startup.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// An HS256 secret must not be empty.
    #[error("the JWT secret is empty")]
    EmptySecret,
    /// The key file is not a PEM public key that can be read.
    #[error("the JWT public key is not a readable PEM public key")]
    InvalidPem,
    /// A private key was given where the public key is expected.
    #[error("the JWT public key file holds a private key; give the public key")]
    PrivateKey,
    /// A readable key of a kind Switchboard does not verify with.
    #[error("unsupported JWT public key: {0}")]
    UnsupportedKey(String),
}

/// Verifies tokens against one key and one algorithm; clones share the same key.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    /// The exact `alg` header value accepted; compared before jsonwebtoken sees the token.
    alg_name: &'static str,
    key: DecodingKey,
    validation: Validation,
    leeway_secs: u64,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithm", &self.inner.alg_name)
            .field("issuer", &self.inner.validation.iss)
            .field("audience", &self.inner.validation.aud)
            .field("leeway_secs", &self.inner.leeway_secs)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Check the key and build the verifier.
    pub fn new(config: AuthConfig) -> Result<Self, AuthSetupError> {
        let (algorithm, alg_name, key) = match &config.key {
            KeySource::Secret(secret) => {
                if secret.len() < 32 {
                    // RFC 7518 §3.2 wants at least the hash size; allowed, but say so.
                    tracing::warn!(bytes = secret.len(), "JWT secret shorter than 32 bytes");
                }
                let key =
                    DecodingKey::from_secret(secret).map_err(|_| AuthSetupError::EmptySecret)?;
                (Algorithm::HS256, "HS256", key)
            }
            KeySource::PublicKeyPem(pem) => public_key(pem)?,
        };

        let mut validation = Validation::new(algorithm);
        validation.leeway = config.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.reject_tokens_expiring_in_less_than = 0;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        // Unset audience: jsonwebtoken would refuse every token that carries an `aud`.
        validation.validate_aud = config.audience.is_some();
        if let Some(audience) = &config.audience {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);

        Ok(Self {
            inner: Arc::new(Inner {
                alg_name,
                key,
                validation,
                leeway_secs: config.leeway_secs,
            }),
        })
    }

    /// Verify a token and return who it names.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        // Size first: nothing of an oversized token is decoded.
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TokenTooLarge);
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        self.check_alg(token)?;
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(
            token,
            &self.inner.key,
            &self.inner.validation,
        )
        .map_err(|e| map_error(e.kind()))?;
        let raw = RawClaims::deserialize(Value::Object(data.claims.clone()))
            .map_err(|_| AuthError::Malformed)?;
        raw.into_identity(data.claims)
    }

    /// The one accepted algorithm: `"HS256"`, `"RS256"` or `"ES256"`.
    pub fn algorithm(&self) -> &'static str {
        self.inner.alg_name
    }

    /// Clock skew tolerated on `exp` / `nbf`; the session also ends at `exp + leeway`.
    pub fn leeway_secs(&self) -> u64 {
        self.inner.leeway_secs
    }

    /// Refuse any `alg` but the configured one, spelled exactly.
    ///
    /// jsonwebtoken would also refuse them, but reports an unknown name such as `none` as a
    /// JSON error; checking here gives `invalid_algorithm` for every such token.
    fn check_alg(&self, token: &str) -> Result<(), AuthError> {
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| AuthError::Malformed)?;
        let header: serde_json::Map<String, Value> =
            serde_json::from_slice(&header).map_err(|_| AuthError::Malformed)?;
        match header.get("alg").and_then(Value::as_str) {
            Some(alg) if alg == self.inner.alg_name => Ok(()),
            _ => Err(AuthError::InvalidAlgorithm),
        }
    }
}

/// The claims we read, typed loosely so that a wrong type reaches jsonwebtoken's validation
/// (`MissingClaim` / `Malformed`) instead of failing deserialization before it.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: Option<Value>,
    #[serde(default)]
    exp: Option<Value>,
    #[serde(default)]
    rooms: Option<Value>,
    #[serde(default)]
    did: Option<Value>,
}

impl RawClaims {
    fn into_identity(self, claims: serde_json::Map<String, Value>) -> Result<Identity, AuthError> {
        let user_id = match self.sub {
            Some(Value::String(sub)) if !sub.is_empty() => sub,
            _ => return Err(AuthError::MissingClaim),
        };
        // Checked, never cleaned: "bob\u{7}" must not become bob.
        check_id(&user_id).map_err(|_| AuthError::InvalidSubject)?;
        let device = match self.did {
            None | Some(Value::Null) => None,
            Some(Value::String(did)) if check_id(&did).is_ok() => Some(did),
            Some(_) => return Err(AuthError::Malformed),
        };
        // jsonwebtoken already validated `exp` as a non-negative number (it rounds floats).
        let expires_at = match &self.exp {
            Some(Value::Number(n)) => n
                .as_u64()
                .or_else(|| n.as_f64().map(|f| f.round() as u64))
                .ok_or(AuthError::Malformed)?,
            Some(_) => return Err(AuthError::Malformed),
            None => return Err(AuthError::MissingClaim),
        };
        let (mut rooms, mut room_patterns) = (Vec::new(), Vec::new());
        match self.rooms {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for item in items {
                    let Value::String(room) = item else {
                        return Err(AuthError::Malformed);
                    };
                    if check_id(&room).is_err() {
                        return Err(AuthError::Malformed);
                    }
                    let list = match room.strip_suffix('*') {
                        Some(prefix) => {
                            // Bounded by the token size, so the quadratic check stays small.
                            if !room_patterns.iter().any(|p: &String| p == prefix) {
                                room_patterns.push(prefix.to_string());
                            }
                            continue;
                        }
                        None => &mut rooms,
                    };
                    if !list.contains(&room) {
                        list.push(room);
                    }
                }
            }
            Some(_) => return Err(AuthError::Malformed),
        }
        Ok(Identity {
            user_id,
            expires_at,
            rooms,
            room_patterns,
            device,
            claims,
        })
    }
}

/// Read a PEM public key and pick its algorithm from the key type.
fn public_key(pem: &[u8]) -> Result<(Algorithm, &'static str, DecodingKey), AuthSetupError> {
    let text = std::str::from_utf8(pem).map_err(|_| AuthSetupError::InvalidPem)?;
    if text.contains("PRIVATE KEY-----") {
        return Err(AuthSetupError::PrivateKey);
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        // jsonwebtoken only extracts the bytes; parse them now so a bad key fails at startup,
        // not as `invalid_signature` on every connect.
        use rsa::pkcs1::DecodeRsaPublicKey as _;
        use rsa::traits::PublicKeyParts as _;
        let der = key
            .try_get_as_bytes()
            .map_err(|_| AuthSetupError::InvalidPem)?;
        let rsa = rsa::PublicKey::from_pkcs1_der(der).map_err(|_| AuthSetupError::InvalidPem)?;
        let bits = rsa.size() * 8;
        if bits < MIN_RSA_BITS {
            return Err(AuthSetupError::UnsupportedKey(format!(
                "RSA key of {bits} bits (at least {MIN_RSA_BITS} required)"
            )));
        }
        return Ok((Algorithm::RS256, "RS256", key));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        // from_ec_pem accepts any curve; ES256 needs a valid P-256 point.
        let point = key
            .try_get_as_bytes()
            .map_err(|_| AuthSetupError::InvalidPem)?;
        if p256::PublicKey::from_sec1_bytes(point).is_err() {
            return Err(AuthSetupError::UnsupportedKey(
                "EC key not on P-256 (only ES256 is supported)".to_owned(),
            ));
        }
        return Ok((Algorithm::ES256, "ES256", key));
    }
    if DecodingKey::from_ed_pem(pem).is_ok() {
        return Err(AuthSetupError::UnsupportedKey(
            "Ed25519 key (only RS256 and ES256 are supported)".to_owned(),
        ));
    }
    Err(AuthSetupError::InvalidPem)
}

/// The single place jsonwebtoken's errors become wire reasons.
fn map_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        // A claim of the wrong type, e.g. a string `exp`.
        | ErrorKind::InvalidClaimFormat(_) => AuthError::Malformed,
        ErrorKind::InvalidSignature => AuthError::InvalidSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => AuthError::InvalidAlgorithm,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::InvalidIssuer,
        ErrorKind::InvalidAudience => AuthError::InvalidAudience,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidSubject => AuthError::MissingClaim,
        other => {
            // Key errors: the key was checked at startup, so this is unexpected. Refuse.
            tracing::warn!(error = ?other, "unexpected JWT verification error");
            AuthError::InvalidSignature
        }
    }
}

/// Mint an HS256 token (used for the printed demo token and in tests).
///
/// # Panics
/// If `secret` is empty (HS256 needs a key).
pub fn mint_hs256(secret: &[u8], user_id: &str, ttl_secs: u64, rooms: &[String]) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = serde_json::json!({
        "sub": user_id,
        "iat": now,
        "exp": now.saturating_add(ttl_secs),
    });
    if !rooms.is_empty() {
        claims["rooms"] = serde_json::json!(rooms);
    }
    let key = EncodingKey::from_secret(secret).expect("mint_hs256 needs a non-empty secret");
    // expect: HMAC signs with any non-empty key and the claims are plain JSON.
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
        .expect("HS256 signing cannot fail")
}

/// 32 random bytes from the OS-seeded CSPRNG, for a demo HS256 secret.
pub fn random_secret() -> Vec<u8> {
    let mut secret = vec![0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    secret
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const RSA_PRIVATE: &[u8] = include_bytes!("../tests/data/rsa_private.pem");
    const RSA_PUBLIC: &[u8] = include_bytes!("../tests/data/rsa_public.pem");
    const RSA_PUBLIC_PKCS1: &[u8] = include_bytes!("../tests/data/rsa_public_pkcs1.pem");
    const EC_PRIVATE: &[u8] = include_bytes!("../tests/data/ec_private.pem");
    const EC_PUBLIC: &[u8] = include_bytes!("../tests/data/ec_public.pem");
    const EC_P384_PUBLIC: &[u8] = include_bytes!("../tests/data/ec_p384_public.pem");

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn config(key: KeySource) -> AuthConfig {
        AuthConfig {
            key,
            issuer: None,
            audience: None,
            leeway_secs: 30,
        }
    }

    fn hs_auth() -> Authenticator {
        Authenticator::new(config(KeySource::Secret(SECRET.to_vec()))).unwrap()
    }

    fn rs_auth() -> Authenticator {
        Authenticator::new(config(KeySource::PublicKeyPem(RSA_PUBLIC.to_vec()))).unwrap()
    }

    fn es_auth() -> Authenticator {
        Authenticator::new(config(KeySource::PublicKeyPem(EC_PUBLIC.to_vec()))).unwrap()
    }

    fn hs_token(claims: &Value) -> String {
        let key = EncodingKey::from_secret(SECRET).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).unwrap()
    }

    fn rs_token(claims: &Value) -> String {
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).unwrap()
    }

    fn es_token(claims: &Value) -> String {
        let key = EncodingKey::from_ec_pem(EC_PRIVATE).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &key).unwrap()
    }

    fn b64(json: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).unwrap())
    }

    fn valid_claims() -> Value {
        json!({ "sub": "alice", "exp": now() + 600 })
    }

    #[test]
    fn valid_hs256() {
        let exp = now() + 600;
        let id = hs_auth()
            .verify(&hs_token(&json!({ "sub": "alice", "exp": exp })))
            .unwrap();
        assert_eq!(id.user_id, "alice");
        assert_eq!(id.expires_at, exp);
        assert!(id.rooms.is_empty() && id.room_patterns.is_empty());
        assert_eq!(id.claims.get("sub"), Some(&json!("alice")));
        assert_eq!(hs_auth().algorithm(), "HS256");
        assert_eq!(hs_auth().leeway_secs(), 30);
    }

    #[test]
    fn minted_token_verifies_with_rooms() {
        let secret = random_secret();
        assert_eq!(secret.len(), 32);
        let rooms = vec!["lobby".to_owned(), "ops".to_owned()];
        let token = mint_hs256(&secret, "demo", 3600, &rooms);
        let auth = Authenticator::new(config(KeySource::Secret(secret))).unwrap();
        let id = auth.verify(&token).unwrap();
        assert_eq!(id.user_id, "demo");
        assert_eq!(id.rooms, rooms);
        assert!(id.expires_at >= now() + 3590);
    }

    #[test]
    fn ids_in_claims_are_checked_never_cleaned() {
        let auth = hs_auth();
        for sub in ["bob\u{7}", "bob\u{0}", "\u{1b}[31mbob"] {
            let claims = json!({ "sub": sub, "exp": now() + 60 });
            assert_eq!(
                auth.verify(&hs_token(&claims)),
                Err(AuthError::InvalidSubject)
            );
        }
        let claims = json!({ "sub": "x".repeat(256), "exp": now() + 60 });
        assert_eq!(
            auth.verify(&hs_token(&claims)),
            Err(AuthError::InvalidSubject)
        );
        let claims = json!({ "sub": "a", "exp": now() + 60, "rooms": ["ok", "b\u{7}d"] });
        assert_eq!(auth.verify(&hs_token(&claims)), Err(AuthError::Malformed));
        let claims = json!({ "sub": "a", "exp": now() + 60, "did": "phone" });
        assert_eq!(
            auth.verify(&hs_token(&claims)).unwrap().device.as_deref(),
            Some("phone")
        );
        for did in [json!(7), json!("p\u{0}"), json!("")] {
            let claims = json!({ "sub": "a", "exp": now() + 60, "did": did });
            assert_eq!(auth.verify(&hs_token(&claims)), Err(AuthError::Malformed));
        }
    }

    #[test]
    fn rooms_claim_parsed_and_checked() {
        let auth = hs_auth();
        let claims = json!({ "sub": "a", "exp": now() + 60, "rooms": ["x", "y", "x"] });
        assert_eq!(auth.verify(&hs_token(&claims)).unwrap().rooms, ["x", "y"]);
        let claims = json!({ "sub": "a", "exp": now() + 60, "rooms": null });
        assert!(auth.verify(&hs_token(&claims)).unwrap().rooms.is_empty());
        let claims = json!({ "sub": "a", "exp": now() + 60, "rooms": ["doc:*", "x", "doc:*"] });
        let id = auth.verify(&hs_token(&claims)).unwrap();
        assert_eq!(
            (id.rooms.as_slice(), id.room_patterns.as_slice()),
            (&["x".to_string()][..], &["doc:".to_string()][..])
        );
        assert!(id.may_join("doc:42") && id.may_join("x"));
        assert!(!id.may_join("do") && !id.may_join("y"));
        for bad in [json!("x"), json!(["x", 1]), json!({ "x": true })] {
            let claims = json!({ "sub": "a", "exp": now() + 60, "rooms": bad });
            assert_eq!(auth.verify(&hs_token(&claims)), Err(AuthError::Malformed));
        }
    }

    #[test]
    fn expired_respects_leeway() {
        let auth = hs_auth();
        let claims = json!({ "sub": "a", "exp": now() - 120 });
        assert_eq!(auth.verify(&hs_token(&claims)), Err(AuthError::Expired));
        // Inside the 30 s leeway: still accepted.
        let claims = json!({ "sub": "a", "exp": now() - 5 });
        assert!(auth.verify(&hs_token(&claims)).is_ok());
    }

    #[test]
    fn nbf_in_future_refused() {
        let auth = hs_auth();
        let claims = json!({ "sub": "a", "exp": now() + 600, "nbf": now() + 300 });
        assert_eq!(auth.verify(&hs_token(&claims)), Err(AuthError::NotYetValid));
        let claims = json!({ "sub": "a", "exp": now() + 600, "nbf": now() + 5 });
        assert!(auth.verify(&hs_token(&claims)).is_ok());
        let claims = json!({ "sub": "a", "exp": now() + 600, "nbf": "soon" });
        assert_eq!(auth.verify(&hs_token(&claims)), Err(AuthError::Malformed));
    }

    #[test]
    fn wrong_secret_refused() {
        let key = EncodingKey::from_secret(b"another secret entirely").unwrap();
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &valid_claims(), &key).unwrap();
        assert_eq!(hs_auth().verify(&token), Err(AuthError::InvalidSignature));
    }

    #[test]
    fn alg_none_refused_in_any_casing() {
        let payload = b64(&valid_claims());
        for alg in ["none", "NONE", "nOnE", "None"] {
            let header = b64(&json!({ "alg": alg, "typ": "JWT" }));
            let token = format!("{header}.{payload}.");
            for auth in [hs_auth(), rs_auth(), es_auth()] {
                assert_eq!(
                    auth.verify(&token),
                    Err(AuthError::InvalidAlgorithm),
                    "{alg}"
                );
            }
        }
        // The classic literal form: {"alg":"none"} with an empty signature.
        let token = format!("eyJhbGciOiJub25lIn0.{payload}.");
        assert_eq!(hs_auth().verify(&token), Err(AuthError::InvalidAlgorithm));
    }

    #[test]
    fn alg_must_match_exactly() {
        let payload = b64(&valid_claims());
        for header in [json!({ "alg": "hs256" }), json!({ "alg": 1 }), json!({})] {
            let token = format!("{}.{payload}.c2ln", b64(&header));
            assert_eq!(hs_auth().verify(&token), Err(AuthError::InvalidAlgorithm));
        }
        // Another HMAC size is still another algorithm.
        let key = EncodingKey::from_secret(SECRET).unwrap();
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS512), &valid_claims(), &key).unwrap();
        assert_eq!(hs_auth().verify(&token), Err(AuthError::InvalidAlgorithm));
    }

    #[test]
    fn valid_rs256_both_pem_forms() {
        let id = rs_auth().verify(&rs_token(&valid_claims())).unwrap();
        assert_eq!(id.user_id, "alice");
        assert_eq!(rs_auth().algorithm(), "RS256");
        let pkcs1 =
            Authenticator::new(config(KeySource::PublicKeyPem(RSA_PUBLIC_PKCS1.to_vec()))).unwrap();
        assert_eq!(pkcs1.algorithm(), "RS256");
        assert!(pkcs1.verify(&rs_token(&valid_claims())).is_ok());
    }

    #[test]
    fn hs256_signed_with_rsa_public_key_refused() {
        // Algorithm confusion: the public key bytes used as an HMAC secret.
        for secret in [RSA_PUBLIC, RSA_PUBLIC_PKCS1] {
            let key = EncodingKey::from_secret(secret).unwrap();
            let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &valid_claims(), &key)
                .unwrap();
            assert_eq!(rs_auth().verify(&token), Err(AuthError::InvalidAlgorithm));
        }
        let key = EncodingKey::from_secret(EC_PUBLIC).unwrap();
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &valid_claims(), &key).unwrap();
        assert_eq!(es_auth().verify(&token), Err(AuthError::InvalidAlgorithm));
    }

    #[test]
    fn asymmetric_tokens_refused_by_hs256() {
        assert_eq!(
            hs_auth().verify(&rs_token(&valid_claims())),
            Err(AuthError::InvalidAlgorithm)
        );
        assert_eq!(
            rs_auth().verify(&es_token(&valid_claims())),
            Err(AuthError::InvalidAlgorithm)
        );
    }

    #[test]
    fn valid_es256() {
        let auth = es_auth();
        assert_eq!(auth.algorithm(), "ES256");
        assert_eq!(
            auth.verify(&es_token(&valid_claims())).unwrap().user_id,
            "alice"
        );
        // A tampered payload breaks the signature.
        let token = es_token(&valid_claims());
        let mut parts: Vec<&str> = token.split('.').collect();
        let other = b64(&json!({ "sub": "mallory", "exp": now() + 600 }));
        parts[1] = &other;
        assert_eq!(
            auth.verify(&parts.join(".")),
            Err(AuthError::InvalidSignature)
        );
    }

    #[test]
    fn key_pointing_headers_are_ignored() {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("other-key".into());
        header.jku = Some("http://127.0.0.1:1/jwks.json".into());
        header.x5u = Some("http://127.0.0.1:1/cert.pem".into());
        let key = EncodingKey::from_secret(SECRET).unwrap();
        let token = jsonwebtoken::encode(&header, &valid_claims(), &key).unwrap();
        assert!(hs_auth().verify(&token).is_ok());
    }

    #[test]
    fn issuer_and_audience() {
        let auth = Authenticator::new(AuthConfig {
            issuer: Some("https://issuer.example".into()),
            audience: Some("switchboard".into()),
            ..config(KeySource::Secret(SECRET.to_vec()))
        })
        .unwrap();
        let exp = now() + 600;
        let ok = json!({ "sub": "a", "exp": exp, "iss": "https://issuer.example", "aud": ["x", "switchboard"] });
        assert!(auth.verify(&hs_token(&ok)).is_ok());
        let bad_iss =
            json!({ "sub": "a", "exp": exp, "iss": "https://evil.example", "aud": "switchboard" });
        assert_eq!(
            auth.verify(&hs_token(&bad_iss)),
            Err(AuthError::InvalidIssuer)
        );
        let bad_aud =
            json!({ "sub": "a", "exp": exp, "iss": "https://issuer.example", "aud": "other" });
        assert_eq!(
            auth.verify(&hs_token(&bad_aud)),
            Err(AuthError::InvalidAudience)
        );
        let no_iss = json!({ "sub": "a", "exp": exp, "aud": "switchboard" });
        assert_eq!(
            auth.verify(&hs_token(&no_iss)),
            Err(AuthError::MissingClaim)
        );

        // Unconfigured: iss / aud in the token are not checked.
        let claims = json!({ "sub": "a", "exp": exp, "iss": "anyone", "aud": "anything" });
        assert!(hs_auth().verify(&hs_token(&claims)).is_ok());
    }

    #[test]
    fn exp_required_and_numeric() {
        let auth = hs_auth();
        assert_eq!(
            auth.verify(&hs_token(&json!({ "sub": "a" }))),
            Err(AuthError::MissingClaim)
        );
        // A non-numeric `exp` is refused as missing (never read as a far-future expiry).
        let far = (now() + 600).to_string();
        for exp in [json!(far), json!(true), json!(-5), json!(1e30)] {
            assert_eq!(
                auth.verify(&hs_token(&json!({ "sub": "a", "exp": exp }))),
                Err(AuthError::MissingClaim),
                "{exp}"
            );
        }
        assert_eq!(
            auth.verify(&hs_token(&json!({ "sub": "a", "exp": null }))),
            Err(AuthError::MissingClaim)
        );
    }

    #[test]
    fn sub_required_non_empty_string() {
        let auth = hs_auth();
        let exp = now() + 600;
        for claims in [
            json!({ "exp": exp }),
            json!({ "exp": exp, "sub": "" }),
            json!({ "exp": exp, "sub": 42 }),
            json!({ "exp": exp, "sub": null }),
        ] {
            assert_eq!(
                auth.verify(&hs_token(&claims)),
                Err(AuthError::MissingClaim),
                "{claims}"
            );
        }
    }

    #[test]
    fn size_and_shape() {
        let auth = hs_auth();
        let huge = "a".repeat(1024 * 1024);
        assert_eq!(auth.verify(&huge), Err(AuthError::TokenTooLarge));
        let just_over = format!("{}.{}", "a".repeat(MAX_TOKEN_BYTES), "b");
        assert_eq!(auth.verify(&just_over), Err(AuthError::TokenTooLarge));
        assert_eq!(auth.verify(""), Err(AuthError::MissingToken));
        assert_eq!(auth.verify("   "), Err(AuthError::MissingToken));
        // `WzFd` is `[1]`, `bnVsbA` is `null`: the header must be a JSON object.
        for junk in [
            "abc",
            "a.b",
            "a.b.c.d",
            "!!!.e30.x",
            "WzFd.e30.x",
            "bnVsbA.e30.x",
        ] {
            assert_eq!(auth.verify(junk), Err(AuthError::Malformed), "{junk}");
        }
        // Right alg but a payload that is not a JSON object.
        let header = b64(&json!({ "alg": "HS256" }));
        let token = format!("{header}.{}.x", URL_SAFE_NO_PAD.encode("[1,2]"));
        assert!(matches!(
            auth.verify(&token),
            Err(AuthError::Malformed | AuthError::InvalidSignature)
        ));
    }

    #[test]
    fn reasons_are_stable() {
        let all = [
            (AuthError::MissingToken, "missing_token"),
            (AuthError::Malformed, "malformed"),
            (AuthError::InvalidSignature, "invalid_signature"),
            (AuthError::InvalidAlgorithm, "invalid_algorithm"),
            (AuthError::Expired, "expired"),
            (AuthError::NotYetValid, "not_yet_valid"),
            (AuthError::InvalidIssuer, "invalid_issuer"),
            (AuthError::InvalidAudience, "invalid_audience"),
            (AuthError::MissingClaim, "missing_claim"),
            (AuthError::TokenTooLarge, "token_too_large"),
        ];
        for (error, reason) in all {
            assert_eq!(error.reason(), reason);
        }
    }

    #[test]
    fn setup_errors() {
        let new = |key| Authenticator::new(config(key));
        assert!(matches!(
            new(KeySource::Secret(Vec::new())),
            Err(AuthSetupError::EmptySecret)
        ));
        assert!(matches!(
            new(KeySource::PublicKeyPem(b"not a pem".to_vec())),
            Err(AuthSetupError::InvalidPem)
        ));
        assert!(matches!(
            new(KeySource::PublicKeyPem(RSA_PRIVATE.to_vec())),
            Err(AuthSetupError::PrivateKey)
        ));
        assert!(matches!(
            new(KeySource::PublicKeyPem(EC_P384_PUBLIC.to_vec())),
            Err(AuthSetupError::UnsupportedKey(_))
        ));
        // Debug never shows the secret.
        let debug = format!("{:?}", config(KeySource::Secret(SECRET.to_vec())));
        assert!(!debug.contains("0123456789"), "{debug}");
    }

    #[test]
    fn authenticator_is_shareable() {
        fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync::<Authenticator>();
    }
}
