//! Connection tokens for tests: HS256 with a shared secret, RS256 and ES256 with the test
//! key pairs in `tests/keys/`.

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::Value;

pub const SECRET: &str = "s3cret";

/// Unix time in seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_secs() as i64
}

/// Path of a file in `tests/keys/`.
pub fn key_file(name: &str) -> String {
    format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

pub fn hs256(claims: &Value) -> String {
    hs256_with(SECRET, claims)
}

pub fn hs256_with(secret: &str, claims: &Value) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes());
    encode(&Header::default(), claims, &key).expect("encode a token")
}

pub fn rs256(claims: &Value) -> String {
    let pem = std::fs::read(key_file("rsa_private.pem")).expect("read the RSA test key");
    let key = EncodingKey::from_rsa_pem(&pem).expect("an RSA key");
    encode(&Header::new(Algorithm::RS256), claims, &key).expect("encode a token")
}

pub fn es256(claims: &Value) -> String {
    let pem = std::fs::read(key_file("ec_private.pem")).expect("read the EC test key");
    let key = EncodingKey::from_ec_pem(&pem).expect("an EC key");
    encode(&Header::new(Algorithm::ES256), claims, &key).expect("encode a token")
}

/// An HS256 token for `sub` that expires `ttl_secs` from now (negative: in the past).
pub fn user(sub: &str, ttl_secs: i64) -> String {
    hs256(&serde_json::json!({ "sub": sub, "exp": now() + ttl_secs }))
}
