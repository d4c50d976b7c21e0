//! `heraldctl node` (and `info`): the nodes of the cluster, and one gateway at a time (its
//! status, its connections, a drain), reached through a router over the control plane.

use herald_proto::api::v1::{InfoRequest, NodeConnectionsRequest, NodeDetail, NodeRequest};
use serde_json::{Value, json};

use crate::api::{Client, connect};
use crate::cli::{Connection, NodeCommand};
use crate::output::show;

/// Every node that sent a heartbeat lately.
async fn list(api: &mut Client, json_output: bool) -> anyhow::Result<()> {
    let nodes = api.info(InfoRequest {}).await?.into_inner().nodes;
    let value: Vec<Value> = nodes
        .iter()
        .map(|n| {
            json!({
                "id": n.id, "kind": n.kind, "version": n.version,
                "uptime_seconds": n.uptime_seconds, "connections": n.connections,
                "subscriptions": n.subscriptions, "channels": n.channels,
                "last_seen_ms": n.last_seen_ms, "control": n.control, "draining": n.draining,
            })
        })
        .collect();
    let rows = nodes
        .into_iter()
        .map(|n| {
            let state = match (n.kind.as_str(), n.draining) {
                ("router", _) => "",
                (_, true) => "draining",
                (_, false) => "serving",
            };
            vec![
                n.id,
                n.kind,
                state.into(),
                n.version,
                format!("{}s", n.uptime_seconds),
                n.connections.to_string(),
                n.subscriptions.to_string(),
                n.channels.to_string(),
                format!("{}ms", n.last_seen_ms),
                n.control,
            ]
        })
        .collect();
    let header = [
        "NODE",
        "KIND",
        "STATE",
        "VERSION",
        "UPTIME",
        "CONNECTIONS",
        "SUBSCRIPTIONS",
        "CHANNELS",
        "LAST SEEN",
        "CONTROL",
    ];
    show(json_output, json!(value), &header, rows);
    Ok(())
}

pub async fn run(
    connection: &Connection,
    json_output: bool,
    command: NodeCommand,
) -> anyhow::Result<()> {
    let api = &mut connect(connection).await?;
    match command {
        NodeCommand::List => list(api, json_output).await?,
        NodeCommand::Info { node } => {
            let detail = api.get_node(NodeRequest { node }).await?.into_inner();
            show_detail(json_output, &detail);
        }
        NodeCommand::Drain { node } => {
            let detail = api.drain_node(NodeRequest { node }).await?.into_inner();
            show_detail(json_output, &detail);
        }
        NodeCommand::Connections { node, user, limit } => {
            let request = NodeConnectionsRequest {
                node,
                user: user.unwrap_or_default(),
                limit,
            };
            let reply = api.node_connections(request).await?.into_inner();
            let value = json!({
                "connections": reply.connections.iter()
                    .map(|c| json!({ "client": c.client, "user": c.user }))
                    .collect::<Vec<_>>(),
                "truncated": reply.truncated,
            });
            let rows = reply
                .connections
                .into_iter()
                .map(|c| vec![c.client, c.user])
                .collect();
            show(json_output, value, &["CLIENT", "USER"], rows);
            if reply.truncated && !json_output {
                eprintln!("heraldctl: more connections than --limit {limit}");
            }
        }
    }
    Ok(())
}

fn show_detail(json_output: bool, d: &NodeDetail) {
    let value = json!({
        "node": d.node, "control": d.control, "draining": d.draining,
        "bus_connected": d.bus_connected, "native_connections": d.native_connections,
        "socketio_websocket": d.socketio_websocket, "socketio_polling": d.socketio_polling,
        "subscriptions": d.subscriptions, "channels": d.channels,
        "drain_period_ms": d.drain_period_ms,
    });
    let state = if d.draining { "draining" } else { "serving" };
    let row = vec![
        d.node.clone(),
        state.into(),
        d.bus_connected.to_string(),
        d.native_connections.to_string(),
        d.socketio_websocket.to_string(),
        d.socketio_polling.to_string(),
        d.subscriptions.to_string(),
        d.channels.to_string(),
        format!("{}ms", d.drain_period_ms),
        d.control.clone(),
    ];
    let header = [
        "NODE",
        "STATE",
        "NATS",
        "NATIVE",
        "SOCKETIO WS",
        "SOCKETIO POLLING",
        "SUBSCRIPTIONS",
        "CHANNELS",
        "DRAIN PERIOD",
        "CONTROL",
    ];
    show(json_output, value, &header, vec![row]);
}
