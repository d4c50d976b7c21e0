//! Serving a gateway on its listeners, and its drain when the node stops.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::gateway::Gateway;
use crate::{control, http, socketio};

/// How long sessions get to say goodbye after the drain period.
const SESSION_GRACE: Duration = Duration::from_secs(5);

/// The listeners of a gateway.
pub struct Listeners {
    /// Client connections (and probes, unless they have their own).
    pub clients: TcpListener,
    /// Probes and `/metrics`, when `gateway.metrics_listen` is set.
    pub probes: Option<TcpListener>,
    /// The control service routers call (`control.listen`).
    pub control: TcpListener,
}

/// Serves the gateway on its listeners. When `shutdown` completes the gateway drains: it
/// turns not ready and refuses new clients, sends its clients away over the drain period
/// (code 3000, so that they reconnect elsewhere), waits briefly for their goodbyes, sends
/// the last presence report, and returns. Probes, `/metrics` and the control service
/// answer throughout.
pub async fn serve(
    listeners: Listeners,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Listeners {
        clients: listener,
        probes,
        control,
    } = listeners;
    let ctx = &gateway.ctx;
    // The bus subscriptions that serve other nodes end with the gateway.
    let mut listening = Vec::new();
    match socketio::forward::listen(gateway.socketio.clone()).await {
        Ok(task) => listening.push(task),
        Err(error) => tracing::warn!(%error, "cannot take forwarded Socket.IO polling requests"),
    }
    let control_stop = CancellationToken::new();
    let control = {
        let (gateway, stop) = (gateway.clone(), control_stop.clone().cancelled_owned());
        tokio::spawn(async move {
            let config = gateway.control.clone();
            if let Err(error) = control::serve(control, gateway, &config, stop).await {
                tracing::error!(%error, "the control service failed");
            }
        })
    };
    // Presence reports outlive the sessions, so that the leaves of drained clients go out.
    let presence_stop = CancellationToken::new();
    let reporter = tokio::spawn(ctx.presence.clone().run(
        ctx.upstream.clone(),
        gateway.presence_heartbeat,
        presence_stop.clone(),
    ));
    let probes_stop = CancellationToken::new();
    let probes = probes.map(|probes| {
        let app = http::probes(gateway.clone());
        let stop = probes_stop.clone().cancelled_owned();
        tokio::spawn(async move {
            if let Err(error) = axum::serve(probes, app).with_graceful_shutdown(stop).await {
                tracing::error!(%error, "the probe and metrics listener failed");
            }
        })
    });
    let app = http::router(gateway.clone());
    // Real-time frames must leave at once: Nagle's algorithm would hold small writes back
    // for tens of milliseconds waiting for the client's delayed acknowledgement.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    // The listener stays open while the sessions drain, for probes and metrics.
    axum::serve(listener, app)
        .with_graceful_shutdown(drain_sessions(gateway.clone(), shutdown))
        .await?;
    presence_stop.cancel();
    let _ = tokio::time::timeout(ctx.config.request_timeout, reporter).await;
    probes_stop.cancel();
    if let Some(probes) = probes {
        let _ = probes.await;
    }
    control_stop.cancel();
    // A caller holding a connection open must not keep the gateway from exiting.
    let mut control = control;
    if tokio::time::timeout(SESSION_GRACE, &mut control)
        .await
        .is_err()
    {
        control.abort();
    }
    for task in listening {
        task.abort();
    }
    Ok(())
}

/// Waits for `shutdown`, then drains the gateway's sessions.
async fn drain_sessions(gateway: Arc<Gateway>, shutdown: impl Future<Output = ()>) {
    shutdown.await;
    let drain = &gateway.ctx.drain;
    drain.begin();
    gateway.sessions.close();
    let limit = drain.period() + SESSION_GRACE;
    if tokio::time::timeout(limit, gateway.sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = gateway.sessions.len(),
            "sessions still open after the drain period"
        );
    }
}
