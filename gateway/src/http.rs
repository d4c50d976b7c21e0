//! HTTP routes of a gateway: the WebSocket endpoints (native protocol, Socket.IO) and
//! health probes.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::Query;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use serde::Deserialize;
use serde_json::json;

use crate::gateway::Gateway;
use crate::{native, socketio};

/// Path of the native JSON protocol.
pub const NATIVE_PATH: &str = "/connection/websocket";

/// Path of the Socket.IO profile.
pub const SOCKETIO_PATH: &str = "/socket.io/";

pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route(NATIVE_PATH, get(native_ws))
        .route(SOCKETIO_PATH, get(socketio_ws))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(gateway)
}

async fn native_ws(State(gateway): State<Arc<Gateway>>, upgrade: WebSocketUpgrade) -> Response {
    if gateway.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    // The WebSocket layer refuses frames over twice the limit outright; frames between the
    // limit and that are closed by the session with code 3502 and a reason.
    let hard_limit = gateway.config.max_frame_size.saturating_mul(2);
    let sessions = gateway.sessions.clone();
    upgrade
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| sessions.track_future(native::serve(socket, gateway)))
}

/// The query of an Engine.IO request.
#[derive(Deserialize)]
struct EngineQuery {
    #[serde(rename = "EIO")]
    eio: Option<String>,
    transport: Option<String>,
    sid: Option<String>,
}

/// An Engine.IO error answer: HTTP 400 with `{code, message}`, as the reference server
/// sends them.
fn engine_error(code: u8, message: &str) -> Response {
    let body = Json(json!({ "code": code, "message": message }));
    (StatusCode::BAD_REQUEST, body).into_response()
}

async fn socketio_ws(
    State(gateway): State<Arc<Gateway>>,
    Query(query): Query<EngineQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if query.eio.as_deref() != Some("4") {
        return engine_error(5, "Unsupported protocol version");
    }
    if gateway.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    match (query.transport.as_deref(), upgrade) {
        // Sessions exist only on WebSocket so far, so no `sid` can be known yet.
        (Some("websocket"), Ok(_)) if query.sid.is_some() => engine_error(1, "Session ID unknown"),
        (Some("websocket"), Ok(upgrade)) => {
            let limit = gateway.socketio.max_payload;
            let sessions = gateway.sessions.clone();
            upgrade
                .max_message_size(limit)
                .max_frame_size(limit)
                .on_upgrade(move |socket| sessions.track_future(socketio::serve(socket, gateway)))
        }
        (Some("websocket"), Err(_)) => engine_error(3, "Bad request"),
        _ => engine_error(0, "Transport unknown"),
    }
}

async fn readyz(State(gateway): State<Arc<Gateway>>) -> Response {
    if gateway.ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}
