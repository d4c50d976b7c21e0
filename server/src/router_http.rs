//! A router's HTTP listener: health probes for the orchestrator and `/metrics` for
//! Prometheus. Routers take no client traffic; this is all they serve over HTTP.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use herald_core::metrics::{NATS_CONNECTED, REDIS_UP};
use herald_gateway::http::exposition;
use herald_router::RouterService;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Serves the probes and metrics of `router` on `listener` until `shutdown`.
pub fn spawn(
    listener: TcpListener,
    router: Arc<RouterService>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let routes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(scrape))
        .with_state(router);
    tokio::spawn(async move {
        let served = axum::serve(listener, routes)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "router HTTP listener failed");
        }
    })
}

/// Ready while the router serves requests and reaches both NATS and Redis.
async fn ready(State(router): State<Arc<RouterService>>) -> (StatusCode, &'static str) {
    if router.ready().await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn scrape(State(router): State<Arc<RouterService>>) -> Response {
    let nats = router.bus_connected();
    let redis = router.store_reachable().await;
    metrics::gauge!(NATS_CONNECTED).set(f64::from(u8::from(nats)));
    metrics::gauge!(REDIS_UP).set(f64::from(u8::from(redis)));
    exposition(herald_core::metrics::render())
}
