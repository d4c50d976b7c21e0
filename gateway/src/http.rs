//! HTTP routes of a gateway: the WebSocket endpoints and health probes.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::gateway::Gateway;
use crate::native;

/// Path of the native JSON protocol.
pub const NATIVE_PATH: &str = "/connection/websocket";

pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route(NATIVE_PATH, get(native_ws))
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

async fn readyz(State(gateway): State<Arc<Gateway>>) -> Response {
    if gateway.ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}
