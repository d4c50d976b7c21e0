//! HTTP routes of a gateway: the native protocol's WebSocket endpoint, the Socket.IO
//! endpoint (WebSocket and long-polling), health probes and Prometheus metrics.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use crate::connections::ConnectionPermit;
use crate::gateway::Gateway;
use crate::hooks::Handshake;
use crate::metrics::{self, Refused};
use crate::native;
use crate::socketio::engine::RequestError;
use crate::socketio::link::Transport;
use crate::socketio::polling::{self, Reply};
use crate::socketio::{forward, websocket};

/// Path of the native JSON protocol.
pub const NATIVE_PATH: &str = "/connection/websocket";

/// Path of the Socket.IO profile.
pub const SOCKETIO_PATH: &str = "/socket.io/";

/// The client endpoints, with the probes and metrics unless they have a listener of their
/// own (`gateway.metrics_listen`).
pub fn router(gateway: Arc<Gateway>) -> Router {
    let app = clients(gateway.clone());
    match gateway.ctx.config.metrics_listen {
        Some(_) => app,
        None => app.merge(probes(gateway)),
    }
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn probes(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(scrape))
        .with_state(gateway)
}

/// The native and Socket.IO endpoints.
fn clients(gateway: Arc<Gateway>) -> Router {
    // Twice `maxPayload`, so that a body just over it reaches the session (which ends it
    // with a clear reason) instead of a bare 413 from the body extractor.
    let body_limit = gateway.ctx.socketio.max_payload.saturating_mul(2);
    let mut socketio = get(socketio_get)
        .post(socketio_post)
        .fallback(socketio_other)
        .layer(DefaultBodyLimit::max(body_limit));
    if !gateway.ctx.socketio.cors_origins.is_empty() {
        socketio = socketio.layer(cors(&gateway));
    }
    let clients = Router::new()
        .route(NATIVE_PATH, get(native_ws))
        .route(SOCKETIO_PATH, socketio)
        .layer(middleware::from_fn_with_state(
            gateway.clone(),
            check_origin,
        ));
    clients.with_state(gateway)
}

/// CORS for long-polling from pages of the allowed origins, with credentials (cookies), as
/// browsers require for `withCredentials` requests.
fn cors(gateway: &Gateway) -> CorsLayer {
    let config = gateway.ctx.socketio.clone();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin.to_str().is_ok_and(|o| config.allows_origin(o))
        }))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers(AllowHeaders::mirror_request())
        .allow_credentials(true)
}

/// Refuses requests from web pages of origins not in `gateway.allowed_origins` with 403,
/// so that another site's page cannot open a connection with the user's cookies.
async fn check_origin(
    State(gateway): State<Arc<Gateway>>,
    request: Request,
    next: Next,
) -> Response {
    let origin = request.headers().get(header::ORIGIN);
    let allowed = origin.is_none_or(|origin| {
        origin
            .to_str()
            .is_ok_and(|origin| gateway.ctx.config.allows_origin(origin))
    });
    if !allowed {
        metrics::refused(Refused::Origin);
        return Refused::Origin.into_response();
    }
    next.run(request).await
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Self::Draining => shutting_down(),
            Self::Full => {
                (StatusCode::SERVICE_UNAVAILABLE, "connection limit reached").into_response()
            }
            Self::Origin => (StatusCode::FORBIDDEN, "origin not allowed").into_response(),
        }
    }
}

/// A new connection's place under `gateway.max_connections`.
fn permit(gateway: &Gateway) -> Result<ConnectionPermit, Refused> {
    let permit = if gateway.ctx.drain.is_draining() {
        Err(Refused::Draining)
    } else {
        gateway.connection_permit().ok_or(Refused::Full)
    };
    if let Err(refused) = permit {
        metrics::refused(refused);
    }
    permit
}

/// Bytes a connection reserves for reading frames, for its whole life. The WebSocket
/// layer's default, 128 KiB, would be most of an idle connection's memory, and so was 4 KiB
/// once the rest had been trimmed; 1 KiB still takes several commands per read, and larger
/// frames arrive whole, in several reads. (512 bytes saved 0.5 KiB per connection but cost
/// a busy publisher 10–20 % of its throughput: `docs/performance.md`.)
const READ_BUFFER: usize = 1024;
/// Bytes written frames gather before they go to the socket, within one batch of the
/// writer (which flushes after each batch anyway).
const WRITE_BUFFER: usize = 16 * 1024;

/// A WebSocket upgrade with Herald's buffer sizes and a frame limit of `limit` bytes.
fn buffered(upgrade: WebSocketUpgrade, limit: usize) -> WebSocketUpgrade {
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(limit)
        .max_frame_size(limit)
}

async fn native_ws(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let permit = match permit(&gateway) {
        Ok(permit) => permit,
        Err(refused) => return refused.into_response(),
    };
    let handshake = handshake(&gateway, &headers);
    // The WebSocket layer refuses frames over twice the limit outright; frames between the
    // limit and that are closed by the session with code 3502 and a reason.
    let hard_limit = gateway.ctx.config.max_frame_size.saturating_mul(2);
    let sessions = gateway.sessions.clone();
    let ctx = gateway.ctx.clone();
    buffered(upgrade, hard_limit).on_upgrade(move |socket| {
        sessions.track_future(native::serve(socket, ctx, handshake, permit))
    })
}

/// What the connect hook may want to know of the request that opens a connection.
fn handshake(gateway: &Gateway, headers: &HeaderMap) -> Handshake {
    gateway
        .ctx
        .hooks
        .handshake(|name| headers.get(name).and_then(|value| value.to_str().ok()))
}

/// The query of an Engine.IO request.
#[derive(Deserialize)]
struct EngineQuery {
    #[serde(rename = "EIO")]
    eio: Option<String>,
    transport: Option<String>,
    sid: Option<String>,
}

impl EngineQuery {
    fn check_version(&self) -> Result<(), RequestError> {
        match self.eio.as_deref() {
            Some("4") => Ok(()),
            _ => Err(RequestError::UnsupportedVersion),
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let content_type = HeaderValue::from_str(&self.content_type)
            .unwrap_or(HeaderValue::from_static("text/plain"));
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        (status, [(header::CONTENT_TYPE, content_type)], self.body).into_response()
    }
}

fn refuse(error: RequestError) -> Response {
    Reply::error(error).into_response()
}

fn shutting_down() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
}

async fn socketio_get(
    State(gateway): State<Arc<Gateway>>,
    Query(query): Query<EngineQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Err(error) = query.check_version() {
        return refuse(error);
    }
    // Flutter's socket_io_client always opens a WebSocket on native platforms, but names
    // its first transport in the query (`transport=polling`, by default): a WebSocket
    // handshake is taken as one whatever the query says.
    let endpoint = gateway.socketio.clone();
    let handshake = handshake(&gateway, &headers);
    let transport = match (&upgrade, query.transport.as_deref(), &query.sid) {
        (Ok(_), Some("polling"), None) => Some("websocket"),
        (_, transport, _) => transport,
    };
    match (transport, query.sid) {
        (Some("websocket"), sid) => {
            let Ok(upgrade) = upgrade else {
                return refuse(RequestError::BadRequest);
            };
            let limit = gateway.ctx.socketio.max_payload;
            let upgrade = buffered(upgrade, limit);
            let sessions = gateway.sessions.clone();
            match sid {
                None => match permit(&gateway) {
                    Ok(permit) => upgrade.on_upgrade(move |socket| {
                        sessions.track_future(websocket::open(socket, endpoint, permit, handshake))
                    }),
                    Err(refused) => refused.into_response(),
                },
                // An upgrade must reach the gateway that holds the session: a WebSocket
                // cannot be forwarded. A client refused here stays on polling.
                Some(sid) => match endpoint.links.get(&sid) {
                    None => refuse(RequestError::UnknownSid),
                    // Ended, and only lingering for the GET its client may have in flight.
                    Some(link) if link.closer().is_closed() => refuse(RequestError::UnknownSid),
                    // As the reference server does: the WebSocket opens, then closes.
                    Some(link) if link.transport() != Transport::Polling => {
                        upgrade.on_upgrade(websocket::refuse)
                    }
                    Some(link) => upgrade.on_upgrade(move |socket| {
                        sessions.track_future(websocket::upgrade(socket, link))
                    }),
                },
            }
        }
        (Some("polling"), None) => match permit(&gateway) {
            Ok(permit) => polling::handshake(&endpoint, permit, handshake)
                .await
                .into_response(),
            Err(refused) => refused.into_response(),
        },
        (Some("polling"), Some(sid)) => {
            let request = polling::Request {
                method: polling::Method::Get,
                sid,
                body: Bytes::new(),
            };
            forward::serve_polling(&endpoint, request)
                .await
                .into_response()
        }
        _ => refuse(RequestError::TransportUnknown),
    }
}

async fn socketio_post(
    State(gateway): State<Arc<Gateway>>,
    Query(query): Query<EngineQuery>,
    body: Bytes,
) -> Response {
    if let Err(error) = query.check_version() {
        return refuse(error);
    }
    match (query.transport.as_deref(), query.sid) {
        (Some("polling"), Some(sid)) => {
            let request = polling::Request {
                method: polling::Method::Post,
                sid,
                body,
            };
            forward::serve_polling(&gateway.socketio, request)
                .await
                .into_response()
        }
        (Some("polling"), None) => refuse(RequestError::BadHandshakeMethod),
        _ => refuse(RequestError::TransportUnknown),
    }
}

/// Any other method: a handshake must be a GET (the reference server's code 2), and a
/// request of a session a GET or a POST.
async fn socketio_other(Query(query): Query<EngineQuery>) -> Response {
    match query.sid {
        None => refuse(RequestError::BadHandshakeMethod),
        Some(_) => refuse(RequestError::BadRequest),
    }
}

async fn readyz(State(gateway): State<Arc<Gateway>>) -> Response {
    if gateway.ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

/// The Prometheus exposition (text format 0.0.4).
async fn scrape(State(gateway): State<Arc<Gateway>>) -> Response {
    gateway.observe();
    exposition(herald_core::metrics::render())
}

/// A Prometheus text exposition as an HTTP response; shared with the router's listener.
pub fn exposition(body: String) -> Response {
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}
