//! The calls of the server API, each answered by asking the routers over the bus, or the
//! gateways over the control plane ([`super::cluster`]).

use std::sync::Arc;

use bytes::Bytes;
use herald_core::channel::MAX_CHANNEL_LEN;
use herald_core::codes::{ErrorCode, Refusal};
use herald_core::config::ChannelsConfig;
use herald_core::envelope;
use herald_core::publish::{self, Limit, Prepared, Publish};
use herald_core::time::unix_micros;
use herald_core::upstream::{Upstream, conflict_refusal};
use herald_proto::api::v1::herald_api_server::HeraldApi;
use herald_proto::api::v1::{
    self as api, BroadcastRequest, BroadcastResponse, BroadcastResult, ChannelsRequest,
    ChannelsResponse, ConsumeEvent, ConsumeRequest, DisconnectRequest, DisconnectResponse,
    HistoryRequest, HistoryResponse, InfoRequest, InfoResponse, NodeConnectionsRequest,
    NodeConnectionsResponse, NodeDetail, NodeInfo, NodeRequest, PresenceRequest, PresenceResponse,
    PresenceStatsRequest, PresenceStatsResponse, PublishRequest, PublishResponse, SubscribeRequest,
    SubscribeResponse, SyncDeleteRequest, SyncDeleteResponse, SyncGetRequest, SyncGetResponse,
    SyncPatchRequest, SyncPatchResponse, UnsubscribeRequest, UnsubscribeResponse, broadcast_result,
};
use herald_proto::bus::v1 as bus;
use herald_proto::control::v1::ClientSelector;
use serde_json::value::RawValue;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::cluster::{self, Command};
use super::consume;
use super::convert::{api_publication, client_info, position};
use super::gateways::Gateways;
use super::status::{from_refusal, invalid};
use crate::history::HistoryStore;
use crate::service::MAX_HISTORY_LIMIT;

/// Most channels one `Broadcast` may name.
pub const MAX_BROADCAST_CHANNELS: usize = 1000;

pub struct Api {
    upstream: Upstream,
    channels: ChannelsConfig,
    gateways: Gateways,
    /// Which channels got publications when, for the consume stream.
    activity: Arc<dyn HistoryStore>,
    /// Turns true when the API shuts down, which ends consume streams.
    closed: watch::Receiver<bool>,
}

impl Api {
    pub fn new(
        upstream: Upstream,
        channels: ChannelsConfig,
        gateways: Gateways,
        activity: Arc<dyn HistoryStore>,
        closed: watch::Receiver<bool>,
    ) -> Self {
        Self {
            upstream,
            channels,
            gateways,
            activity,
            closed,
        }
    }

    /// Checks a publish of `data` and `attachments` on `channel` and makes it ready to
    /// send.
    fn prepare(
        &self,
        channel: &str,
        data: &str,
        attachments: &[Bytes],
        key: String,
    ) -> Result<Prepared, Refusal> {
        publish::valid_channel(channel)?;
        envelope::check_event_name(data)?;
        envelope::check_attachments(data, attachments.len())?;
        let rules = self.channels.rules_for(channel);
        let publish = Publish {
            channel: channel.to_string(),
            data: Bytes::copy_from_slice(data.as_bytes()),
            attachments: attachments.to_vec(),
            publisher: None,
            idempotency_key: (!key.is_empty()).then_some(key),
        };
        let bus_limit = self.upstream.bus().max_payload();
        publish::prepare(
            publish,
            Limit::channel(&rules),
            bus_limit,
            rules.has_history(),
        )
    }
}

/// Refuses an invalid channel name, as clients are refused (code 102).
fn valid_channel(channel: &str) -> Result<(), Status> {
    publish::valid_channel(channel).map_err(from_refusal)
}

/// Checks that `data` is one JSON document.
fn json(data: &str) -> Result<(), Status> {
    serde_json::from_str::<&RawValue>(data)
        .map(drop)
        .map_err(|e| invalid(format!("data is not JSON: {e}")))
}

#[tonic::async_trait]
impl HeraldApi for Api {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let request = request.into_inner();
        json(&request.data)?;
        let prepared = self
            .prepare(
                &request.channel,
                &request.data,
                &request.attachments,
                request.idempotency_key,
            )
            .map_err(from_refusal)?;
        let at = publish::send(&self.upstream, prepared)
            .await
            .map_err(from_refusal)?;
        Ok(Response::new(PublishResponse {
            position: Some(position(at)),
        }))
    }

    async fn broadcast(
        &self,
        request: Request<BroadcastRequest>,
    ) -> Result<Response<BroadcastResponse>, Status> {
        let request = request.into_inner();
        json(&request.data)?;
        if request.channels.len() > MAX_BROADCAST_CHANNELS {
            return Err(invalid(format!(
                "at most {MAX_BROADCAST_CHANNELS} channels per broadcast"
            )));
        }
        // Channels with history go to the routers as one batch; the others straight out.
        let mut outcomes: Vec<Option<Result<bus::Position, Refusal>>> =
            vec![None; request.channels.len()];
        let mut routed = Vec::new();
        let mut routed_at = Vec::new();
        for (i, channel) in request.channels.iter().enumerate() {
            let key = request.idempotency_key.clone();
            match self.prepare(channel, &request.data, &request.attachments, key) {
                Ok(Prepared::Routed(publish)) => {
                    routed.push(publish);
                    routed_at.push(i);
                }
                Ok(direct) => {
                    outcomes[i] = Some(publish::send(&self.upstream, direct).await);
                }
                Err(refusal) => outcomes[i] = Some(Err(refusal)),
            }
        }
        let mut routed_at = routed_at.into_iter();
        for batch in publish::batches(routed, publish::batch_limit(&self.upstream)) {
            let sent = batch.len();
            let replies = match self.upstream.publish(batch).await {
                Ok(replies) => replies,
                Err(refusal) => vec![Err(refusal); sent],
            };
            for (i, reply) in routed_at.by_ref().zip(replies) {
                outcomes[i] = Some(reply);
            }
        }
        let results = request
            .channels
            .into_iter()
            .zip(outcomes)
            .map(|(channel, outcome)| {
                let outcome =
                    outcome.unwrap_or_else(|| Err(Refusal::new(ErrorCode::Internal, "not sent")));
                let result = match outcome {
                    Ok(at) => broadcast_result::Result::Position(position(at)),
                    Err(refusal) => broadcast_result::Result::Error(api::Error {
                        code: refusal.code.code(),
                        message: refusal.message,
                    }),
                };
                BroadcastResult {
                    channel,
                    result: Some(result),
                }
            })
            .collect();
        Ok(Response::new(BroadcastResponse { results }))
    }

    async fn history(
        &self,
        request: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        let request = request.into_inner();
        valid_channel(&request.channel)?;
        if request.limit > MAX_HISTORY_LIMIT {
            return Err(invalid(format!("limit exceeds {MAX_HISTORY_LIMIT}")));
        }
        let page = self
            .upstream
            .history(bus::HistoryRequest {
                channel: request.channel,
                since: request.since,
                limit: request.limit,
                reverse: request.reverse,
            })
            .await
            .map_err(from_refusal)?;
        let publications = page.publications.into_iter().map(api_publication).collect();
        Ok(Response::new(HistoryResponse {
            publications,
            position: page.position.map(position),
            truncated: page.truncated,
        }))
    }

    async fn presence(
        &self,
        request: Request<PresenceRequest>,
    ) -> Result<Response<PresenceResponse>, Status> {
        let channel = request.into_inner().channel;
        valid_channel(&channel)?;
        let clients = self.upstream.presence(&channel).await;
        let clients = clients.map_err(from_refusal)?;
        let clients = clients.into_iter().map(client_info).collect();
        Ok(Response::new(PresenceResponse { clients }))
    }

    async fn presence_stats(
        &self,
        request: Request<PresenceStatsRequest>,
    ) -> Result<Response<PresenceStatsResponse>, Status> {
        let channel = request.into_inner().channel;
        valid_channel(&channel)?;
        let stats = self.upstream.presence_stats(&channel).await;
        let stats = stats.map_err(from_refusal)?;
        Ok(Response::new(PresenceStatsResponse {
            num_clients: stats.clients,
            num_users: stats.users,
        }))
    }

    async fn channels(
        &self,
        request: Request<ChannelsRequest>,
    ) -> Result<Response<ChannelsResponse>, Status> {
        let pattern = request.into_inner().pattern;
        if pattern.len() > MAX_CHANNEL_LEN {
            return Err(invalid(format!(
                "a pattern is at most {MAX_CHANNEL_LEN} bytes, as a channel name"
            )));
        }
        Ok(Response::new(
            cluster::channels(&self.gateways, pattern).await,
        ))
    }

    async fn disconnect(
        &self,
        request: Request<DisconnectRequest>,
    ) -> Result<Response<DisconnectResponse>, Status> {
        let request = request.into_inner();
        if request.user.is_empty() && request.client.is_empty() {
            return Err(invalid("name a user or a client"));
        }
        let who = ClientSelector {
            user: request.user,
            client: request.client,
            channel: String::new(),
        };
        let (connections, failures) =
            cluster::command(&self.gateways, Command::Disconnect, who).await;
        Ok(Response::new(DisconnectResponse {
            connections,
            failures,
        }))
    }

    async fn unsubscribe(
        &self,
        request: Request<UnsubscribeRequest>,
    ) -> Result<Response<UnsubscribeResponse>, Status> {
        let request = request.into_inner();
        if request.user.is_empty() {
            return Err(invalid("name a user"));
        }
        valid_channel(&request.channel)?;
        let who = ClientSelector {
            user: request.user,
            client: String::new(),
            channel: request.channel,
        };
        let (connections, failures) =
            cluster::command(&self.gateways, Command::Unsubscribe, who).await;
        Ok(Response::new(UnsubscribeResponse {
            connections,
            failures,
        }))
    }

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<SubscribeResponse>, Status> {
        let request = request.into_inner();
        if request.user.is_empty() {
            return Err(invalid("name a user"));
        }
        valid_channel(&request.channel)?;
        if self.channels.rules_for(&request.channel).sync {
            return Err(Status::failed_precondition(
                "a sync document's subscriber must say which revision it has: clients \
                 subscribe to documents themselves",
            ));
        }
        let who = ClientSelector {
            user: request.user,
            client: String::new(),
            channel: request.channel,
        };
        let (connections, failures) =
            cluster::command(&self.gateways, Command::Subscribe, who).await;
        Ok(Response::new(SubscribeResponse {
            connections,
            failures,
        }))
    }

    type ConsumeStream = ReceiverStream<Result<ConsumeEvent, Status>>;

    async fn consume(
        &self,
        request: Request<ConsumeRequest>,
    ) -> Result<Response<Self::ConsumeStream>, Status> {
        let events = consume::start(
            request.into_inner(),
            self.upstream.clone(),
            self.activity.clone(),
            self.channels.clone(),
            self.closed.clone(),
        )?;
        Ok(Response::new(ReceiverStream::new(events)))
    }

    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let now_ms = unix_micros() / 1000;
        let nodes = self
            .gateways
            .nodes()
            .live()
            .into_iter()
            .map(|(status, since)| NodeInfo {
                uptime_seconds: now_ms.saturating_sub(status.started_at_ms) / 1000,
                id: status.id,
                kind: status.kind,
                version: status.version,
                connections: status.connections,
                subscriptions: status.subscriptions,
                channels: status.channels,
                last_seen_ms: since.as_millis() as u64,
                control: status.control,
                draining: status.draining,
            })
            .collect();
        Ok(Response::new(InfoResponse { nodes }))
    }

    async fn get_node(
        &self,
        request: Request<NodeRequest>,
    ) -> Result<Response<NodeDetail>, Status> {
        let node = request.into_inner().node;
        Ok(Response::new(cluster::node(&self.gateways, &node).await?))
    }

    async fn drain_node(
        &self,
        request: Request<NodeRequest>,
    ) -> Result<Response<NodeDetail>, Status> {
        let node = request.into_inner().node;
        Ok(Response::new(cluster::drain(&self.gateways, &node).await?))
    }

    async fn node_connections(
        &self,
        request: Request<NodeConnectionsRequest>,
    ) -> Result<Response<NodeConnectionsResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(
            cluster::connections(&self.gateways, request).await?,
        ))
    }

    async fn sync_get(
        &self,
        request: Request<SyncGetRequest>,
    ) -> Result<Response<SyncGetResponse>, Status> {
        let request = request.into_inner();
        valid_channel(&request.channel)?;
        let state = self
            .upstream
            .sync_read(&request.channel, None)
            .await
            .map_err(from_refusal)?;
        Ok(Response::new(SyncGetResponse {
            doc: String::from_utf8_lossy(&state.doc).into_owned(),
            position: state.position.map(position),
        }))
    }

    async fn sync_patch(
        &self,
        request: Request<SyncPatchRequest>,
    ) -> Result<Response<SyncPatchResponse>, Status> {
        let request = request.into_inner();
        valid_channel(&request.channel)?;
        let patch = bus::SyncPatch {
            patch: Bytes::from(request.patch.into_bytes()),
            base_rev: request.base_rev,
            idempotency_key: request.idempotency_key,
            publisher: None,
            base_epoch: request.base_epoch,
        };
        let outcome = self
            .upstream
            .sync_patch(&request.channel, patch)
            .await
            .map_err(from_refusal)?;
        match outcome {
            Ok(committed) => Ok(Response::new(SyncPatchResponse {
                position: committed.position.map(position),
                duplicate: committed.duplicate,
            })),
            Err(conflict) => Err(from_refusal(conflict_refusal(&conflict))),
        }
    }

    async fn sync_delete(
        &self,
        request: Request<SyncDeleteRequest>,
    ) -> Result<Response<SyncDeleteResponse>, Status> {
        let request = request.into_inner();
        valid_channel(&request.channel)?;
        let at = self
            .upstream
            .sync_delete(&request.channel)
            .await
            .map_err(from_refusal)?;
        Ok(Response::new(SyncDeleteResponse {
            position: Some(position(at)),
        }))
    }
}
