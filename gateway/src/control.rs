//! The gateway's control service (`proto/herald/control/v1/control.proto`): what routers
//! ask of the clients held here for the server API (disconnect, subscribe or unsubscribe a
//! user, count channels), and what an operator asks of this one node through them (its
//! status, its connections, a drain). Served on the control listener, behind the control
//! key or mutual TLS, never on the client port.

use std::future::Future;
use std::sync::Arc;

use herald_core::call_key;
use herald_core::channel::MAX_CHANNEL_LEN;
use herald_core::config::ControlConfig;
use herald_core::control::{self, CONTROL_KEY, NODE_METADATA, TlsFileError, incoming};
use herald_proto::control::v1::gateway_control_server::{GatewayControl, GatewayControlServer};
use herald_proto::control::v1::{
    Affected, ChannelCount, ChannelCounts, ChannelsQuery, ClientSelector, Connection,
    ConnectionList, ConnectionsQuery, DrainRequest, GatewayStatus, StatusRequest,
};
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use wildmatch::WildMatch;

use crate::clients::Command;
use crate::gateway::Gateway;

/// Most connections one `Connections` call lists.
pub const MAX_LISTED: u32 = 10_000;
/// Connections listed when the caller gives no limit.
const DEFAULT_LISTED: u32 = 100;

/// Why the control service cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    TlsFile(#[from] TlsFileError),
    #[error("control service: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Refuses control TLS files that cannot be read or used, before the node starts.
pub fn check(config: &ControlConfig) -> Result<(), ControlError> {
    if let Some(tls) = control::server_tls(config)? {
        // Parses the certificates and key, as serving would.
        Server::builder().tls_config(tls)?;
    }
    Ok(())
}

/// Serves the control service of `gateway` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    config: &ControlConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ControlError> {
    let key = call_key::check(CONTROL_KEY, &config.key);
    let node = gateway.ctx.node_id.clone();
    let admit = move |request: Request<()>| {
        let request = key(request)?;
        // A call for another gateway reached this one at an address that gateway
        // announced: it must not act on this one's clients.
        match request.metadata().get(NODE_METADATA) {
            Some(meant) if meant.as_bytes() != node.as_bytes() => {
                Err(Status::failed_precondition(format!(
                    "this is {node}, not {}",
                    String::from_utf8_lossy(meant.as_bytes())
                )))
            }
            _ => Ok(request),
        }
    };
    let service = GatewayControlServer::with_interceptor(Service { gateway }, admit);
    let mut server = Server::builder();
    if let Some(tls) = control::server_tls(config)? {
        server = server.tls_config(tls)?;
    }
    server
        .add_service(service)
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await?;
    Ok(())
}

struct Service {
    gateway: Arc<Gateway>,
}

impl Service {
    /// Sends `command` to the sessions holding `user`'s clients (or client `client`).
    fn tell(&self, user: &str, client: &str, command: Command) -> Response<Affected> {
        let connections = self.gateway.ctx.clients.send(user, client, command);
        Response::new(Affected { connections })
    }

    fn status(&self) -> GatewayStatus {
        let gateway = &self.gateway;
        let (connections, subscriptions, channels) = gateway.load();
        let (polling, websocket) = gateway.socketio.links.by_transport();
        let drain = &gateway.ctx.drain;
        GatewayStatus {
            node: gateway.ctx.node_id.clone(),
            draining: drain.is_draining(),
            bus_connected: gateway.ctx.upstream.bus().is_connected(),
            native_connections: connections.saturating_sub((polling + websocket) as u64),
            socketio_websocket: websocket as u64,
            socketio_polling: polling as u64,
            subscriptions,
            channels,
            drain_period_ms: drain.period().as_millis() as u64,
        }
    }
}

#[tonic::async_trait]
impl GatewayControl for Service {
    async fn disconnect(
        &self,
        request: Request<ClientSelector>,
    ) -> Result<Response<Affected>, Status> {
        let who = request.into_inner();
        let command = Command::Disconnect {
            user: who.user.clone(),
            client: who.client.clone(),
        };
        Ok(self.tell(&who.user, &who.client, command))
    }

    async fn unsubscribe(
        &self,
        request: Request<ClientSelector>,
    ) -> Result<Response<Affected>, Status> {
        let who = request.into_inner();
        let command = Command::Unsubscribe {
            user: who.user.clone(),
            channel: who.channel,
        };
        Ok(self.tell(&who.user, "", command))
    }

    async fn subscribe(
        &self,
        request: Request<ClientSelector>,
    ) -> Result<Response<Affected>, Status> {
        let who = request.into_inner();
        let command = Command::Subscribe {
            user: who.user.clone(),
            channel: who.channel,
        };
        Ok(self.tell(&who.user, "", command))
    }

    async fn channels(
        &self,
        request: Request<ChannelsQuery>,
    ) -> Result<Response<ChannelCounts>, Status> {
        let pattern = request.into_inner().pattern;
        if pattern.len() > MAX_CHANNEL_LEN {
            return Err(Status::invalid_argument(format!(
                "a pattern is at most {MAX_CHANNEL_LEN} bytes, as a channel name"
            )));
        }
        let pattern = WildMatch::new(if pattern.is_empty() { "*" } else { &pattern });
        let channels = self
            .gateway
            .ctx
            .hub
            .channel_counts(|channel| pattern.matches(channel))
            .into_iter()
            .map(|(channel, subscribers)| ChannelCount {
                channel,
                subscribers,
            })
            .collect();
        Ok(Response::new(ChannelCounts { channels }))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<GatewayStatus>, Status> {
        Ok(Response::new(self.status()))
    }

    async fn connections(
        &self,
        request: Request<ConnectionsQuery>,
    ) -> Result<Response<ConnectionList>, Status> {
        let query = request.into_inner();
        let limit = match query.limit {
            0 => DEFAULT_LISTED,
            limit if limit > MAX_LISTED => {
                return Err(Status::invalid_argument(format!(
                    "limit {limit} is above {MAX_LISTED}"
                )));
            }
            limit => limit,
        };
        let (clients, truncated) = self.gateway.ctx.clients.list(&query.user, limit as usize);
        let connections = clients
            .into_iter()
            .map(|(client, user)| Connection {
                client: client.to_string(),
                user: user.to_string(),
            })
            .collect();
        Ok(Response::new(ConnectionList {
            connections,
            truncated,
        }))
    }

    async fn drain(
        &self,
        _request: Request<DrainRequest>,
    ) -> Result<Response<GatewayStatus>, Status> {
        self.gateway.ctx.drain.begin();
        Ok(Response::new(self.status()))
    }
}
