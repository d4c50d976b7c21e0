//! Shared secrets that gRPC calls carry in their metadata: the server API's key
//! (`x-api-key`) and the control plane's (`x-control-key`). The checking side lets a call
//! through only with the exact key; the calling side adds it to every call.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Request, Status};

/// Which key a call carries, and in which metadata entry.
#[derive(Debug, Clone, Copy)]
pub struct KeyName {
    /// The metadata entry.
    pub metadata: &'static str,
    /// What errors call it.
    pub what: &'static str,
}

/// The server API's key (`api.key`).
pub const API_KEY: KeyName = KeyName {
    metadata: "x-api-key",
    what: "API key",
};

/// An interceptor that lets through calls that carry `key` as `name` (every call, when
/// `key` is empty).
pub fn check(
    name: KeyName,
    key: &str,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
    let key = key.to_string();
    move |request: Request<()>| {
        if key.is_empty() {
            return Ok(request);
        }
        let given = request.metadata().get(name.metadata);
        match given.map(|value| value.as_bytes()) {
            Some(given) if constant_time_eq(given, key.as_bytes()) => Ok(request),
            Some(_) => Err(Status::unauthenticated(format!("wrong {}", name.what))),
            None => Err(Status::unauthenticated(format!(
                "the {} is missing (metadata {})",
                name.what, name.metadata
            ))),
        }
    }
}

/// An interceptor that adds a key to every call.
#[derive(Clone)]
pub struct AddKey {
    metadata: &'static str,
    key: Option<MetadataValue<Ascii>>,
}

impl AddKey {
    /// Adds `key` as `name` (nothing, when `key` is empty); an error when `key` is not
    /// valid metadata (visible ASCII).
    pub fn new(name: KeyName, key: &str) -> Result<Self, InvalidKey> {
        let key = match key.is_empty() {
            true => None,
            false => Some(key.parse().map_err(|_| InvalidKey(name.what))?),
        };
        Ok(Self {
            metadata: name.metadata,
            key,
        })
    }
}

impl tonic::service::Interceptor for AddKey {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(key) = &self.key {
            request.metadata_mut().insert(self.metadata, key.clone());
        }
        Ok(request)
    }
}

/// A key that cannot travel as gRPC metadata.
#[derive(Debug, thiserror::Error)]
#[error("the {0} must be visible ASCII characters")]
pub struct InvalidKey(&'static str);

/// Compares without returning early, so the time taken says nothing about the key.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor;

    use super::*;

    const NAME: KeyName = KeyName {
        metadata: "x-test-key",
        what: "test key",
    };

    fn call(key: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(key) = key {
            request
                .metadata_mut()
                .insert(NAME.metadata, key.parse().unwrap());
        }
        request
    }

    #[test]
    fn only_the_key_opens() {
        let check = check(NAME, "s3cret");
        assert!(check(call(Some("s3cret"))).is_ok());
        for wrong in [Some("s3cre"), Some("s3cret!"), Some("other"), None] {
            let status = check(call(wrong)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{wrong:?}");
        }
        let open = super::check(NAME, "");
        assert!(open(call(None)).is_ok());
    }

    #[test]
    fn the_caller_adds_the_key_the_server_checks() {
        let mut add = AddKey::new(NAME, "s3cret").unwrap();
        let request = add.call(Request::new(())).unwrap();
        assert!(check(NAME, "s3cret")(request).is_ok());
        assert!(AddKey::new(NAME, "line\nbreak").is_err());
    }
}
