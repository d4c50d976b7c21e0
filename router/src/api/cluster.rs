//! The calls of the server API that the gateways answer, over the control plane: commands
//! about a user's or a client's connections, channel counts, and one node's status,
//! connections and drain (`heraldctl node`). Commands to every gateway succeed with the
//! gateways that did not answer listed in `failures`; a call about one node fails if it
//! does not answer.

use std::collections::BTreeMap;

use herald_proto::api::v1::{
    ChannelInfo, ChannelsResponse, NodeConnection, NodeConnectionsRequest, NodeConnectionsResponse,
    NodeDetail, NodeFailure,
};
use herald_proto::bus::v1::NodeStatus;
use herald_proto::control::v1::{
    ChannelsQuery, ClientSelector, ConnectionsQuery, DrainRequest, GatewayStatus, StatusRequest,
};
use tonic::Status;

use super::gateways::{Client, Gateways};

/// Which command about clients.
#[derive(Clone, Copy)]
pub enum Command {
    Disconnect,
    Subscribe,
    Unsubscribe,
}

/// Sends `command` about `who` to the gateways concerned: every gateway for a user's
/// connections (a user may be on any), and only its own gateway for a native client,
/// whose id names it. The connections it reached, and the gateways it did not.
pub async fn command(
    gateways: &Gateways,
    command: Command,
    who: ClientSelector,
) -> (u32, Vec<NodeFailure>) {
    let mut concerned = gateways.listed();
    if who.user.is_empty()
        && let Some(holder) = native_holder(&concerned, &who.client)
    {
        concerned.retain(|g| g.id == holder);
    }
    let reached = gateways
        .all(concerned, |mut client: Client| {
            let who = who.clone();
            async move {
                match command {
                    Command::Disconnect => client.disconnect(who).await,
                    Command::Subscribe => client.subscribe(who).await,
                    Command::Unsubscribe => client.unsubscribe(who).await,
                }
            }
        })
        .await;
    let connections = reached.answers.iter().map(|(_, a)| a.connections).sum();
    (connections, reached.failures)
}

/// The channels matching `pattern` with their subscribers, added up over the gateways.
pub async fn channels(gateways: &Gateways, pattern: String) -> ChannelsResponse {
    let reached = gateways
        .all(gateways.listed(), |mut client: Client| {
            let query = ChannelsQuery {
                pattern: pattern.clone(),
            };
            async move { client.channels(query).await }
        })
        .await;
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for (_, answer) in &reached.answers {
        for count in &answer.channels {
            *counts.entry(count.channel.clone()).or_default() += count.subscribers;
        }
    }
    ChannelsResponse {
        channels: counts
            .into_iter()
            .map(|(channel, subscribers)| ChannelInfo {
                channel,
                subscribers,
            })
            .collect(),
        gateways: reached.answers.len() as u32,
        failures: reached.failures,
    }
}

/// What gateway `node` holds now.
pub async fn node(gateways: &Gateways, node: &str) -> Result<NodeDetail, Status> {
    let (gateway, status) = gateways
        .one(node, |mut client: Client| async move {
            client.status(StatusRequest {}).await
        })
        .await?;
    Ok(detail(&gateway, status))
}

/// Drains gateway `node`.
pub async fn drain(gateways: &Gateways, node: &str) -> Result<NodeDetail, Status> {
    let (gateway, status) = gateways
        .one(node, |mut client: Client| async move {
            client.drain(DrainRequest {}).await
        })
        .await?;
    tracing::info!(node, "drain requested through the server API");
    Ok(detail(&gateway, status))
}

/// The client connections of one gateway.
pub async fn connections(
    gateways: &Gateways,
    request: NodeConnectionsRequest,
) -> Result<NodeConnectionsResponse, Status> {
    let query = ConnectionsQuery {
        user: request.user,
        limit: request.limit,
    };
    let (_, list) = gateways
        .one(&request.node, |mut client: Client| {
            let query = query.clone();
            async move { client.connections(query).await }
        })
        .await?;
    Ok(NodeConnectionsResponse {
        connections: list
            .connections
            .into_iter()
            .map(|c| NodeConnection {
                client: c.client,
                user: c.user,
            })
            .collect(),
        truncated: list.truncated,
    })
}

/// The gateway that holds native client `client`: its ids are the gateway's id, a dash
/// and a number. `None` for another id (a Socket.IO socket's), which any gateway may hold.
fn native_holder(gateways: &[NodeStatus], client: &str) -> Option<String> {
    let numbered = |rest: &str| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit());
    gateways
        .iter()
        .find(|g| {
            client
                .strip_prefix(g.id.as_str())
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(numbered)
        })
        .map(|g| g.id.clone())
}

fn detail(gateway: &NodeStatus, status: GatewayStatus) -> NodeDetail {
    NodeDetail {
        node: status.node,
        control: gateway.control.clone(),
        draining: status.draining,
        bus_connected: status.bus_connected,
        native_connections: status.native_connections,
        socketio_websocket: status.socketio_websocket,
        socketio_polling: status.socketio_polling,
        subscriptions: status.subscriptions,
        channels: status.channels,
        drain_period_ms: status.drain_period_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_native_client_id_names_its_gateway() {
        let gateway = |id: &str| NodeStatus {
            id: id.into(),
            ..NodeStatus::default()
        };
        let listed = [
            gateway("gw-1"),
            gateway("gw-1-2"),
            gateway("standalone-a1b2"),
        ];
        let holder = |client| native_holder(&listed, client);
        assert_eq!(holder("gw-1-42").as_deref(), Some("gw-1"));
        assert_eq!(holder("gw-1-2-7").as_deref(), Some("gw-1-2"));
        assert_eq!(
            holder("standalone-a1b2-9").as_deref(),
            Some("standalone-a1b2")
        );
        for other in ["gw-1", "gw-1-", "gw-1-4x", "Xf3kq9zPsoAAAB", "gw-9-1", ""] {
            assert_eq!(holder(other), None, "{other}");
        }
    }
}
