//! The commands that call the server API, each printed as a table or as JSON.

use anyhow::{Context, bail};
use herald_core::call_key::{self, AddKey};
use herald_proto::api::v1::herald_api_client::HeraldApiClient;
use herald_proto::api::v1::{
    BroadcastRequest, ChannelsRequest, ClientInfo, DisconnectRequest, HistoryRequest, NodeFailure,
    PresenceRequest, PresenceStatsRequest, Publication, PublishRequest, StreamPosition,
    SubscribeRequest, SyncDeleteRequest, SyncGetRequest, SyncPatchRequest, UnsubscribeRequest,
    broadcast_result,
};
use serde_json::{Value, json};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::cli::{Command, Connection, SyncCommand};
use crate::output::{self, show};

pub type Client = HeraldApiClient<InterceptedService<Channel, AddKey>>;

pub async fn connect(connection: &Connection) -> anyhow::Result<Client> {
    let mut endpoint =
        Channel::from_shared(connection.url.clone()).context("--url is not a URL")?;
    if let Some(ca_file) = &connection.ca_file {
        let ca =
            std::fs::read(ca_file).with_context(|| format!("cannot read {}", ca_file.display()))?;
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        endpoint = endpoint.tls_config(tls)?;
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach the server API at {}", connection.url))?;
    let key = AddKey::new(
        call_key::API_KEY,
        connection.key.as_deref().unwrap_or_default(),
    )?;
    Ok(HeraldApiClient::with_interceptor(channel, key))
}

/// Checks that `data` is JSON before it travels.
fn json_document(data: &str) -> anyhow::Result<String> {
    serde_json::from_str::<Value>(data)
        .context("DATA must be a JSON document (quote strings: '\"hi\"')")?;
    Ok(data.to_string())
}

fn position(position: Option<StreamPosition>) -> Value {
    match position {
        Some(p) if !p.epoch.is_empty() => json!({ "offset": p.offset, "epoch": p.epoch }),
        _ => json!({}),
    }
}

/// A value as a table shows it: strings without their quotes, nothing for null.
fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Parses a payload for display; what is not JSON is shown as a string.
/// A client as JSON, its `info` parsed.
fn client(c: &ClientInfo) -> Value {
    json!({ "client": c.client, "user": c.user, "info": parsed(&c.info) })
}

fn parsed(data: &str) -> Value {
    serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.to_string()))
}

/// How many connections a command reached, and the gateways it did not reach: an error
/// when there are any.
fn show_connections(
    json_output: bool,
    connections: u32,
    failures: &[NodeFailure],
) -> anyhow::Result<()> {
    let value = json!({ "connections": connections, "failures": output::failures_json(failures) });
    show(
        json_output,
        value,
        &["CONNECTIONS"],
        vec![vec![connections.to_string()]],
    );
    output::not_reached(failures)
}

pub async fn run(
    connection: &Connection,
    json_output: bool,
    command: Command,
) -> anyhow::Result<()> {
    let mut api = connect(connection).await?;
    match command {
        Command::Publish {
            channel,
            data,
            idempotency_key,
        } => {
            let request = PublishRequest {
                channel,
                data: json_document(&data)?,
                idempotency_key: idempotency_key.unwrap_or_default(),
                attachments: Vec::new(),
            };
            let reply = api.publish(request).await?.into_inner();
            let at = position(reply.position);
            let row = vec![plain(&at["offset"]), plain(&at["epoch"])];
            show(json_output, at, &["OFFSET", "EPOCH"], vec![row]);
        }
        Command::Broadcast {
            data,
            channels,
            idempotency_key,
        } => {
            let request = BroadcastRequest {
                channels,
                data: json_document(&data)?,
                attachments: Vec::new(),
                idempotency_key: idempotency_key.unwrap_or_default(),
            };
            let results = api.broadcast(request).await?.into_inner().results;
            let mut values = Vec::new();
            let mut rows = Vec::new();
            for result in results {
                let (value, outcome) = match result.result {
                    Some(broadcast_result::Result::Position(p)) => {
                        let at = position(Some(p));
                        (at.clone(), format!("offset {}", at["offset"]))
                    }
                    Some(broadcast_result::Result::Error(e)) => (
                        json!({ "error": { "code": e.code, "message": e.message } }),
                        format!("error {}: {}", e.code, e.message),
                    ),
                    None => (json!({}), String::new()),
                };
                values.push(json!({ "channel": result.channel, "result": value }));
                rows.push(vec![result.channel, outcome]);
            }
            show(json_output, json!(values), &["CHANNEL", "RESULT"], rows);
        }
        Command::History {
            channel,
            limit,
            since,
            reverse,
        } => {
            let request = HistoryRequest {
                channel,
                since,
                limit,
                reverse,
            };
            let page = api.history(request).await?.into_inner();
            let from = |p: &Publication| p.publisher.as_ref().map(client);
            let publications: Vec<Value> = page
                .publications
                .iter()
                .map(|p| {
                    json!({
                        "offset": p.offset,
                        "time_ms": p.time_ms,
                        "data": parsed(&p.data),
                        "attachments": p.attachments.len(),
                        "from": from(p),
                    })
                })
                .collect();
            let rows = page
                .publications
                .iter()
                .map(|p| {
                    let sender = p.publisher.as_ref().map(|c| match c.user.is_empty() {
                        true => c.client.clone(),
                        false => c.user.clone(),
                    });
                    vec![
                        p.offset.to_string(),
                        sender.unwrap_or_default(),
                        p.data.clone(),
                    ]
                })
                .collect();
            let value = json!({
                "publications": publications,
                "position": position(page.position),
                "truncated": page.truncated,
            });
            show(json_output, value, &["OFFSET", "FROM", "DATA"], rows);
        }
        Command::Sync(command) => sync(&mut api, json_output, command).await?,
        Command::Presence { channel } => {
            let clients = api
                .presence(PresenceRequest { channel })
                .await?
                .into_inner()
                .clients;
            let value: Vec<Value> = clients.iter().map(client).collect();
            let rows = clients
                .into_iter()
                .map(|c| vec![c.client, c.user, c.info])
                .collect();
            show(json_output, json!(value), &["CLIENT", "USER", "INFO"], rows);
        }
        Command::PresenceStats { channel } => {
            let stats = api
                .presence_stats(PresenceStatsRequest { channel })
                .await?
                .into_inner();
            let value = json!({ "num_clients": stats.num_clients, "num_users": stats.num_users });
            let row = vec![stats.num_clients.to_string(), stats.num_users.to_string()];
            show(json_output, value, &["CLIENTS", "USERS"], vec![row]);
        }
        Command::Channels { pattern } => {
            let request = ChannelsRequest {
                pattern: pattern.unwrap_or_default(),
            };
            let reply = api.channels(request).await?.into_inner();
            let value = json!({
                "gateways": reply.gateways,
                "failures": output::failures_json(&reply.failures),
                "channels": reply.channels.iter()
                    .map(|c| json!({ "channel": c.channel, "subscribers": c.subscribers }))
                    .collect::<Vec<_>>(),
            });
            let rows = reply
                .channels
                .into_iter()
                .map(|c| vec![c.channel, c.subscribers.to_string()])
                .collect();
            show(json_output, value, &["CHANNEL", "SUBSCRIBERS"], rows);
            output::not_reached(&reply.failures)?;
        }
        Command::Disconnect { user, client } => {
            let request = DisconnectRequest {
                user: user.unwrap_or_default(),
                client: client.unwrap_or_default(),
            };
            let reply = api.disconnect(request).await?.into_inner();
            show_connections(json_output, reply.connections, &reply.failures)?;
        }
        Command::Unsubscribe { user, channel } => {
            let reply = api
                .unsubscribe(UnsubscribeRequest { user, channel })
                .await?
                .into_inner();
            show_connections(json_output, reply.connections, &reply.failures)?;
        }
        Command::Subscribe { user, channel } => {
            let reply = api
                .subscribe(SubscribeRequest { user, channel })
                .await?
                .into_inner();
            show_connections(json_output, reply.connections, &reply.failures)?;
        }
        Command::Token(_) | Command::Config(_) | Command::Info | Command::Node(_) => {
            bail!("not a command of this module")
        }
    }
    Ok(())
}

/// A sync document's revision and epoch: revision 0 and no epoch for one never written.
fn revision(position: Option<StreamPosition>) -> (u64, String) {
    position.map_or((0, String::new()), |p| (p.offset, p.epoch))
}

async fn sync(api: &mut Client, json_output: bool, command: SyncCommand) -> anyhow::Result<()> {
    match command {
        SyncCommand::Get { channel } => {
            let reply = api.sync_get(SyncGetRequest { channel }).await?.into_inner();
            let (rev, epoch) = revision(reply.position);
            let value = json!({ "rev": rev, "epoch": epoch, "doc": parsed(&reply.doc) });
            let row = vec![rev.to_string(), epoch, reply.doc];
            show(json_output, value, &["REV", "EPOCH", "DOC"], vec![row]);
        }
        SyncCommand::Patch {
            channel,
            patch,
            base_rev,
            base_epoch,
            idempotency_key,
        } => {
            serde_json::from_str::<serde_json::Map<String, Value>>(&patch)
                .context("PATCH must be a JSON object (a merge patch: '{\"status\":\"on\"}')")?;
            let request = SyncPatchRequest {
                channel,
                patch,
                base_rev,
                idempotency_key: idempotency_key.unwrap_or_default(),
                base_epoch: base_epoch.unwrap_or_default(),
            };
            let reply = api.sync_patch(request).await?.into_inner();
            let (rev, epoch) = revision(reply.position);
            let value = json!({ "rev": rev, "epoch": epoch, "duplicate": reply.duplicate });
            let row = vec![rev.to_string(), epoch, reply.duplicate.to_string()];
            show(
                json_output,
                value,
                &["REV", "EPOCH", "DUPLICATE"],
                vec![row],
            );
        }
        SyncCommand::Delete { channel } => {
            let reply = api
                .sync_delete(SyncDeleteRequest { channel })
                .await?
                .into_inner();
            let (rev, epoch) = revision(reply.position);
            let value = json!({ "rev": rev, "epoch": epoch });
            show(
                json_output,
                value,
                &["REV", "EPOCH"],
                vec![vec![rev.to_string(), epoch]],
            );
        }
    }
    Ok(())
}
