//! An app's backend as Herald's hooks reach it: a real gRPC server of `HeraldBackend`
//! and the same calls as JSON over HTTP (`POST <http_url>/<hook>`), on free loopback ports,
//! in the test's runtime.
//!
//! What it answers depends on what it is asked, so that one backend serves every case of
//! a test:
//! - connect: the user named by the `session` cookie, or by `{"session": user}` in the
//!   client's data; `info` `{"name": user}`; an admission of `{"ttl": secs}` seconds when
//!   the data asks; user `banned` is refused (1001, "banned"); no session
//!   at all is refused with 101.
//! - refresh: extends by a minute, with `info` `{"name": user, "refreshed": n}`.
//! - subscribe: a channel containing `forbidden` is refused (1002, "not a member"); one
//!   containing `slow` takes 3 s to answer; one containing `vip` gets `info`
//!   `{"vip": true}`.
//! - publish: data containing `badword` is refused (1003, "watch your language"); data
//!   containing `slow` takes 3 s; `stamp` in the data becomes `STAMPED`; `ephemeral` is
//!   kept out of history.
//! - rpc: `echo` answers `{"echo": data, "user": user}`; `fail` is refused (1004, "no such
//!   conversation"); anything else takes 3 s if it is `slow`, or is refused with 104.
//!
//! Every call is recorded, as its JSON, for the test to look at.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::routing::post;
use herald_proto::backend::v1::herald_backend_server::{HeraldBackend, HeraldBackendServer};
use herald_proto::backend::v1::{
    ConnectReply, ConnectRequest, Error, PublishReply, PublishRequest, RefreshReply,
    RefreshRequest, RpcReply, RpcRequest, SubscribeReply, SubscribeRequest,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// How long a `slow` answer takes: longer than the hooks' timeouts in tests.
pub const SLOW: Duration = Duration::from_secs(3);

/// The calls a backend received, as `(hook, request as JSON)`.
#[derive(Default)]
pub struct Calls(Mutex<Vec<(String, Value)>>);

impl Calls {
    fn record(&self, hook: &str, request: &impl serde::Serialize) {
        let request = serde_json::to_value(request).unwrap_or(Value::Null);
        let mut calls = self.0.lock().unwrap_or_else(|e| e.into_inner());
        calls.push((hook.to_string(), request));
    }

    /// The requests of `hook` so far.
    pub fn of(&self, hook: &str) -> Vec<Value> {
        let calls = self.0.lock().unwrap_or_else(|e| e.into_inner());
        calls
            .iter()
            .filter(|(name, _)| name == hook)
            .map(|(_, request)| request.clone())
            .collect()
    }
}

/// A running backend; both servers stop when it is dropped.
pub struct TestBackend {
    /// `grpc://127.0.0.1:port`, for `hooks.*.url`.
    pub grpc_url: String,
    /// `http://127.0.0.1:port/hooks`, likewise.
    pub http_url: String,
    pub calls: Arc<Calls>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl TestBackend {
    /// Starts both servers on free ports.
    pub async fn start() -> Self {
        let logic = Logic {
            calls: Arc::default(),
        };
        let calls = logic.calls.clone();
        let (grpc, grpc_addr) = listener().await;
        let service = HeraldBackendServer::new(logic.clone());
        let grpc_task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(grpc))
                .await;
            if let Err(e) = served {
                eprintln!("test backend (gRPC) ended: {e}");
            }
        });
        let (http, http_addr) = listener().await;
        let app = axum::Router::new()
            .route("/hooks/{hook}", post(http_hook))
            .with_state(logic);
        let http_task = tokio::spawn(async move {
            if let Err(e) = axum::serve(http, app).await {
                eprintln!("test backend (HTTP) ended: {e}");
            }
        });
        Self {
            grpc_url: format!("grpc://{grpc_addr}"),
            http_url: format!("http://{http_addr}/hooks"),
            calls,
            tasks: vec![grpc_task, http_task],
        }
    }
}

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port for the test backend");
    let addr = listener.local_addr().expect("the listener's address");
    (listener, addr)
}

fn refusal(code: u32, message: &str) -> Option<Error> {
    Some(Error {
        code,
        message: message.into(),
    })
}

/// What the backend answers, the same over both transports.
#[derive(Clone)]
struct Logic {
    calls: Arc<Calls>,
}

impl Logic {
    async fn connect(&self, request: ConnectRequest) -> ConnectReply {
        self.calls.record("connect", &request);
        let data: Value = serde_json::from_str(&request.data).unwrap_or(Value::Null);
        let cookie = request.headers.get("cookie").and_then(|cookie| {
            cookie
                .split(';')
                .find_map(|pair| pair.trim().strip_prefix("session="))
                .map(str::to_string)
        });
        let user = cookie.or_else(|| data["session"].as_str().map(str::to_string));
        let Some(user) = user else {
            return ConnectReply {
                error: refusal(101, "no session"),
                ..ConnectReply::default()
            };
        };
        if user == "banned" {
            return ConnectReply {
                error: refusal(1001, "banned"),
                ..ConnectReply::default()
            };
        }
        let expire_at = match data["ttl"].as_u64() {
            Some(ttl) => now_secs() + ttl,
            None => 0,
        };
        ConnectReply {
            info: json!({ "name": user }).to_string(),
            user,
            channels: vec!["granted:*".into()],
            expire_at,
            ..ConnectReply::default()
        }
    }

    async fn refresh(&self, request: RefreshRequest) -> RefreshReply {
        self.calls.record("refresh", &request);
        let user = request.client.unwrap_or_default().user;
        let refreshed = self.calls.of("refresh").len();
        RefreshReply {
            expire_at: now_secs() + 60,
            info: json!({ "name": user, "refreshed": refreshed }).to_string(),
            ..RefreshReply::default()
        }
    }

    async fn subscribe(&self, request: SubscribeRequest) -> SubscribeReply {
        self.calls.record("subscribe", &request);
        let channel = &request.channel;
        if channel.contains("slow") {
            tokio::time::sleep(SLOW).await;
        }
        if channel.contains("forbidden") {
            return SubscribeReply {
                error: refusal(1002, "not a member"),
                ..SubscribeReply::default()
            };
        }
        let info = match channel.contains("vip") {
            true => json!({ "vip": true }).to_string(),
            false => String::new(),
        };
        SubscribeReply { error: None, info }
    }

    async fn publish(&self, request: PublishRequest) -> PublishReply {
        self.calls.record("publish", &request);
        let data = &request.data;
        if data.contains("slow") {
            tokio::time::sleep(SLOW).await;
        }
        if data.contains("badword") {
            return PublishReply {
                error: refusal(1003, "watch your language"),
                ..PublishReply::default()
            };
        }
        PublishReply {
            error: None,
            data: data
                .contains("stamp")
                .then(|| data.replace("stamp", "STAMPED")),
            skip_history: data.contains("ephemeral"),
        }
    }

    async fn rpc(&self, request: RpcRequest) -> RpcReply {
        self.calls.record("rpc", &request);
        let user = request.client.clone().unwrap_or_default().user;
        match request.method.as_str() {
            "echo" => {
                let data: Value = serde_json::from_str(&request.data).unwrap_or(Value::Null);
                RpcReply {
                    data: json!({ "echo": data, "user": user }).to_string(),
                    ..RpcReply::default()
                }
            }
            "fail" => RpcReply {
                error: refusal(1004, "no such conversation"),
                ..RpcReply::default()
            },
            method => {
                if method == "slow" {
                    tokio::time::sleep(SLOW).await;
                }
                RpcReply {
                    error: refusal(104, "no such method"),
                    ..RpcReply::default()
                }
            }
        }
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[tonic::async_trait]
impl HeraldBackend for Logic {
    async fn connect(
        &self,
        request: Request<ConnectRequest>,
    ) -> Result<Response<ConnectReply>, Status> {
        Ok(Response::new(
            Logic::connect(self, request.into_inner()).await,
        ))
    }

    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> Result<Response<RefreshReply>, Status> {
        Ok(Response::new(
            Logic::refresh(self, request.into_inner()).await,
        ))
    }

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<SubscribeReply>, Status> {
        Ok(Response::new(
            Logic::subscribe(self, request.into_inner()).await,
        ))
    }

    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishReply>, Status> {
        Ok(Response::new(
            Logic::publish(self, request.into_inner()).await,
        ))
    }

    async fn rpc(&self, request: Request<RpcRequest>) -> Result<Response<RpcReply>, Status> {
        Ok(Response::new(Logic::rpc(self, request.into_inner()).await))
    }
}

/// The HTTP hooks: one path per call, the same messages as JSON.
async fn http_hook(
    State(logic): State<Logic>,
    Path(hook): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, (axum::http::StatusCode, String)> {
    fn read<T: serde::de::DeserializeOwned>(
        body: Value,
    ) -> Result<T, (axum::http::StatusCode, String)> {
        serde_json::from_value(body)
            .map_err(|e| (axum::http::StatusCode::BAD_REQUEST, e.to_string()))
    }
    let reply = match hook.as_str() {
        "connect" => serde_json::to_value(logic.connect(read(body)?).await),
        "refresh" => serde_json::to_value(logic.refresh(read(body)?).await),
        "subscribe" => serde_json::to_value(logic.subscribe(read(body)?).await),
        "publish" => serde_json::to_value(logic.publish(read(body)?).await),
        "rpc" => serde_json::to_value(logic.rpc(read(body)?).await),
        _ => return Err((axum::http::StatusCode::NOT_FOUND, hook)),
    };
    reply
        .map(Json)
        .map_err(|e| (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}
