//! Reaching the app's backend: the `HeraldBackend` gRPC service, or the same messages as
//! JSON posted over HTTP/1.1. One [`Backend`] per configured URL; it holds a lazily
//! connected channel (gRPC) or a connection pool (HTTP) that every call shares.

use std::future::Future;
use std::str::FromStr;

use bytes::Bytes;
use herald_proto::backend::v1::herald_backend_client::HeraldBackendClient;
use herald_proto::backend::v1::{
    ConnectReply, ConnectRequest, PublishReply, PublishRequest, RefreshReply, RefreshRequest,
    RpcReply, RpcRequest, SubscribeReply, SubscribeRequest,
};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;
use tonic::Status;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

/// Largest answer read from a backend.
pub const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

/// Header (and gRPC metadata) carrying `hooks.key`.
const KEY_HEADER: &str = "x-herald-key";

/// Why a call got no usable answer.
#[derive(Debug, Error)]
pub enum CallError {
    #[error("the backend answered with gRPC status {}: {}", .0.code(), .0.message())]
    Grpc(Status),
    #[error("the backend answered with HTTP status {0}")]
    HttpStatus(u16),
    #[error("the backend cannot be reached: {0}")]
    Unreachable(String),
    #[error("the backend's answer cannot be read: {0}")]
    Unreadable(String),
}

/// A call of the backend: its request, its reply and its name (the HTTP path's last part).
pub trait Call: Serialize + Sized + Send + Sync + 'static {
    type Reply: DeserializeOwned + Default + Send;
    const NAME: &'static str;

    fn grpc(
        client: &mut HeraldBackendClient<Channel>,
        request: tonic::Request<Self>,
    ) -> impl Future<Output = Result<tonic::Response<Self::Reply>, Status>> + Send + '_;
}

macro_rules! calls {
    ($($request:ty => $reply:ty, $name:literal, $method:ident;)*) => {$(
        impl Call for $request {
            type Reply = $reply;
            const NAME: &'static str = $name;

            fn grpc(
                client: &mut HeraldBackendClient<Channel>,
                request: tonic::Request<Self>,
            ) -> impl Future<Output = Result<tonic::Response<Self::Reply>, Status>> + Send + '_
            {
                client.$method(request)
            }
        }
    )*};
}

calls! {
    ConnectRequest => ConnectReply, "connect", connect;
    RefreshRequest => RefreshReply, "refresh", refresh;
    SubscribeRequest => SubscribeReply, "subscribe", subscribe;
    PublishRequest => PublishReply, "publish", publish;
    RpcRequest => RpcReply, "rpc", rpc;
}

/// One backend endpoint.
#[derive(Clone)]
pub enum Backend {
    Grpc(HeraldBackendClient<Channel>),
    Http {
        client: HttpClient<HttpConnector, Full<Bytes>>,
        /// The URL, without a trailing `/`; a call posts to `<base>/<name>`.
        base: String,
    },
}

impl Backend {
    /// The backend at `url` (`grpc://` or `http://`, checked by the configuration).
    /// Nothing is connected until the first call.
    pub fn new(url: &str) -> Result<Self, String> {
        if let Some(rest) = url.strip_prefix("grpc://") {
            let endpoint = Endpoint::from_str(&format!("http://{rest}"))
                .map_err(|e| format!("hook url {url}: {e}"))?;
            let client = HeraldBackendClient::new(endpoint.connect_lazy())
                .max_decoding_message_size(MAX_REPLY_BYTES);
            return Ok(Self::Grpc(client));
        }
        let base = url.trim_end_matches('/').to_string();
        hyper::Uri::from_str(&base).map_err(|e| format!("hook url {url}: {e}"))?;
        let client = HttpClient::builder(TokioExecutor::new()).build_http();
        Ok(Self::Http { client, base })
    }

    /// Calls the backend with `request`; `key` goes along as `x-herald-key` when set.
    pub async fn call<C: Call>(&self, request: C, key: &str) -> Result<C::Reply, CallError> {
        match self {
            Self::Grpc(client) => {
                let mut request = tonic::Request::new(request);
                if let Ok(key) = MetadataValue::from_str(key)
                    && !key.is_empty()
                {
                    request.metadata_mut().insert(KEY_HEADER, key);
                }
                let mut client = client.clone();
                C::grpc(&mut client, request)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|status| match status.code() {
                        tonic::Code::Unavailable => CallError::Unreachable(status.to_string()),
                        _ => CallError::Grpc(status),
                    })
            }
            Self::Http { client, base } => {
                post(client, &format!("{base}/{}", C::NAME), &request, key).await
            }
        }
    }
}

async fn post<Q: Serialize, A: DeserializeOwned>(
    client: &HttpClient<HttpConnector, Full<Bytes>>,
    url: &str,
    request: &Q,
    key: &str,
) -> Result<A, CallError> {
    let body = serde_json::to_vec(request).map_err(|e| CallError::Unreadable(e.to_string()))?;
    let mut builder = hyper::Request::post(url).header("content-type", "application/json");
    if !key.is_empty() {
        builder = builder.header(KEY_HEADER, key);
    }
    let request = builder
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| CallError::Unreachable(e.to_string()))?;
    let response = client
        .request(request)
        .await
        .map_err(|e| CallError::Unreachable(e.to_string()))?;
    let status = response.status();
    if status != hyper::StatusCode::OK {
        return Err(CallError::HttpStatus(status.as_u16()));
    }
    let body = Limited::new(response.into_body(), MAX_REPLY_BYTES)
        .collect()
        .await
        .map_err(|e| CallError::Unreadable(e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| CallError::Unreadable(e.to_string()))
}
