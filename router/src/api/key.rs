//! The API key: when configured, every API call carries it in the `x-api-key` metadata.

use tonic::{Request, Status};

/// Metadata key of the API key.
pub const METADATA_KEY: &str = "x-api-key";

/// An interceptor that lets through calls with `key` (every call, when `key` is empty).
pub fn check(key: &str) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
    let key = key.to_string();
    move |request: Request<()>| {
        if key.is_empty() {
            return Ok(request);
        }
        let given = request.metadata().get(METADATA_KEY);
        match given.map(|value| value.as_bytes()) {
            Some(given) if constant_time_eq(given, key.as_bytes()) => Ok(request),
            Some(_) => Err(Status::unauthenticated("wrong API key")),
            None => Err(Status::unauthenticated(format!(
                "the API key is missing (metadata {METADATA_KEY})"
            ))),
        }
    }
}

/// Compares without returning early, so the time taken says nothing about the key.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(key: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(key) = key {
            request
                .metadata_mut()
                .insert(METADATA_KEY, key.parse().unwrap());
        }
        request
    }

    #[test]
    fn only_the_key_opens() {
        let check = check("s3cret");
        assert!(check(call(Some("s3cret"))).is_ok());
        for wrong in [Some("s3cre"), Some("s3cret!"), Some("other"), None] {
            let status = check(call(wrong)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{wrong:?}");
        }
        let open = super::check("");
        assert!(open(call(None)).is_ok());
    }
}
