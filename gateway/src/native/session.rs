//! One native-protocol connection: a `connect` handshake with a deadline, then one loop
//! over the client's commands, until the client leaves or the server closes it.
//!
//! Commands of one connection are handled in order, so a client's publications keep the
//! order it sent them in. Publishes the client has already sent travel to the routers
//! together as one batch, appended in order: one round trip for many publications.
//! Replies and publications share the connection's bounded outbound queue, written by a
//! separate task.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures_util::{Sink, Stream, StreamExt};
use herald_core::codes::{DisconnectCode, ErrorCode, Refusal};
use herald_core::rules::Action;
use herald_proto::bus::v1::{HistoryRequest, Position, SyncState};

use super::burst::{Stop, read_burst};
use super::command::{
    self, ChannelParams, Command, ConnectParams, HistoryParams, PublishParams, RefreshParams,
    RpcParams, SubscribeParams,
};
use super::{push, reply};
use crate::access::Access;
use crate::batch::Batch;
use crate::catch_up::{Resumed, Returning};
use crate::clients::{Command as ApiCommand, Commands};
use crate::connections::ConnectionPermit;
use crate::context::Context;
use crate::deadline::{earliest, passed, wait_until};
use crate::hooks::{self, Attempt, Handshake};
use crate::hub::{ClientId, Plain, Subscriber};
use crate::metrics::{self, NATIVE};
use crate::outbound::{self, Outbound};
use crate::render::Format;
use crate::sync::wire::{ConflictView, PatchOptions, StateView, SyncOptions};
use crate::sync::{self, SyncSubscriber};
use herald_core::envelope;
use herald_core::publish::{self, Limit, Prepared, Publish};
use herald_core::upstream::conflict_refusal;
use herald_proto::backend::v1::Client as HookClient;
use serde_json::value::RawValue;

struct Session {
    ctx: Arc<Context>,
    id: ClientId,
    /// Cluster-wide id, carried as the origin of this client's publications.
    name: Arc<str>,
    /// Who the client is, once it sent `connect`.
    access: Option<Access>,
    subscriptions: HashSet<String>,
    /// The sync documents it is subscribed to.
    documents: HashMap<String, Arc<SyncSubscriber>>,
    /// A document subscribed to whose state is in the reply being sent: its patches may
    /// flow once the reply is queued.
    opening: Option<(Arc<SyncSubscriber>, SyncState)>,
    outbound: Outbound,
    /// How the hub reaches this connection, on every channel.
    subscriber: Arc<dyn Subscriber>,
    /// What the request that opened the connection said, for the connect hook.
    handshake: Handshake,
    /// Commands of the server API about this connection.
    commands: Commands,
}

/// Serves one upgraded WebSocket until it closes; `permit` counts it against the
/// gateway's limit until then.
pub fn serve(
    socket: WebSocket,
    ctx: Arc<Context>,
    handshake: Handshake,
    permit: ConnectionPermit,
) -> impl Future<Output = ()> + Send {
    let (sink, stream) = socket.split();
    run(sink, stream, ctx, handshake, permit)
}

/// Serves one connection whose frames arrive on `stream` and leave through `sink`, until
/// it closes: any WebSocket, or a test's channels.
///
/// Not an `async fn`: what it sets up is moved into the returned future once, where an
/// `async fn` would hold its arguments and the session made of them side by side for the
/// connection's whole life. So the session is set up (its writer spawned, its command
/// queue opened, the connection counted) when this is called, in a runtime, and the
/// future is meant to be awaited at once.
pub fn run<W, R>(
    sink: W,
    mut stream: R,
    ctx: Arc<Context>,
    handshake: Handshake,
    permit: ConnectionPermit,
) -> impl Future<Output = ()> + Send + use<W, R>
where
    W: Sink<Message, Error: Send> + Unpin + Send + 'static,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin + Send,
{
    let (outbound, frames) = outbound::channel(ctx.outbound_bounds());
    let writer = tokio::spawn(outbound::write_loop(
        sink,
        frames,
        outbound.closer().clone(),
        push::disconnect,
    ));
    let id = ctx.next_id();
    let mut session = Session {
        name: format!("{}-{id}", ctx.node_id).into(),
        commands: ctx.clients.open(id),
        ctx,
        id,
        access: None,
        subscriptions: HashSet::new(),
        documents: HashMap::new(),
        opening: None,
        subscriber: Plain::new(Format::Native, outbound.clone()),
        outbound,
        handshake,
    };
    metrics::opened(NATIVE);
    // A block, not an `async fn` taking the session: an `async fn` keeps a copy of each
    // argument beside the one it works on.
    async move {
        session.serve(&mut stream).await;
        let reason = session.outbound.closer().reason();
        drop(session);
        metrics::ended(NATIVE, reason);
        let _ = writer.await;
        drop(permit);
    }
}

impl Session {
    /// The connection's loop, until it closes.
    async fn serve<R>(&mut self, stream: &mut R)
    where
        R: Stream<Item = Result<Message, axum::Error>> + Unpin,
    {
        let closer = self.outbound.closer().clone();
        // No deadline if the configured timeout is beyond what a clock can hold.
        let handshake = tokio::time::Instant::now().checked_add(self.ctx.config.connect_timeout);
        let leave = self.ctx.drain.turn();
        tokio::pin!(leave);
        loop {
            // One timer: the earliest of the connect deadline and the access's end and renewal.
            let next = match &self.access {
                None => handshake,
                Some(access) => earliest([access.expires(), access.renewal()]),
            };
            tokio::select! {
                // The work a connection does now and then is boxed: an idle connection's task
                // then holds only this loop's state, not the largest of its commands'.
                Some(command) = self.commands.recv() => Box::pin(self.on_command(command)).await,
                frame = stream.next() => {
                    // What a client sent ahead is read at most one frame's size at a time.
                    let max_bytes = self.ctx.config.max_frame_size;
                    let (texts, stop) = read_burst(stream, frame, max_bytes);
                    if let Err(code) = Box::pin(self.handle(texts)).await {
                        closer.close_after_queued(code);
                    }
                    match stop {
                        Some(Stop::Binary | Stop::Broken) => {
                            closer.close_after_queued(DisconnectCode::BadRequest);
                        }
                        Some(Stop::Gone) => closer.gone(),
                        None => {}
                    }
                }
                () = wait_until(next) => Box::pin(self.on_timer()).await,
                () = closer.closed() => {}
                () = &mut leave => closer.close(DisconnectCode::Shutdown),
            }
            if closer.is_closed() {
                break;
            }
        }
    }

    /// The connect deadline passed, or the access's end or renewal came.
    async fn on_timer(&mut self) {
        let closer = self.outbound.closer();
        match self.access.as_mut() {
            None => closer.close(DisconnectCode::ConnectTimeout),
            Some(access) if access.expired() => closer.close(DisconnectCode::TokenExpired),
            Some(access) => {
                if passed(access.renewal(), tokio::time::Instant::now()) {
                    access.renew(&self.ctx.hooks, &self.name, NATIVE, "").await;
                }
            }
        }
    }

    fn send(&self, frame: Utf8Bytes) {
        self.outbound.send(frame);
    }

    /// A command of the server API about this connection.
    async fn on_command(&mut self, command: ApiCommand) {
        match command {
            ApiCommand::Subscribe { channel, .. } => {
                let params = SubscribeParams {
                    channel: channel.clone(),
                    recover: false,
                    offset: None,
                    epoch: None,
                };
                let history = self.ctx.channels.rules_for(&channel).has_history();
                // Already subscribed, or at the limit: left as it is.
                if let Ok((position, _)) = self.join(params, By::Backend).await {
                    self.send(push::subscribe(&channel, &position, history));
                }
            }
            ApiCommand::Disconnect { .. } => {
                self.outbound.closer().close(DisconnectCode::Disconnected);
            }
            ApiCommand::Unsubscribe { channel, .. } => {
                if self.subscriptions.remove(&channel) {
                    self.leave(&channel);
                    self.send(push::unsubscribe(&channel));
                } else if let Some(document) = self.documents.remove(&channel) {
                    self.leave_document(&document);
                    self.send(push::unsubscribe(&channel));
                }
            }
        }
    }

    /// Handles text frames in order. An error closes the connection with that code, after
    /// the commands before the offending frame have been answered.
    async fn handle(&mut self, texts: Vec<Utf8Bytes>) -> Result<(), DisconnectCode> {
        let mut batch = Batch::new(&self.ctx.upstream);
        let outcome = self.handle_into(&texts, &mut batch).await;
        self.flush(&mut batch).await;
        outcome
    }

    async fn handle_into(
        &mut self,
        texts: &[Utf8Bytes],
        batch: &mut Batch<u64>,
    ) -> Result<(), DisconnectCode> {
        for text in texts {
            if text.len() > self.ctx.config.max_frame_size {
                return Err(DisconnectCode::MessageTooLarge);
            }
            let parsed = command::parse(text).map_err(|violation| {
                tracing::debug!(client = self.id, %violation, "protocol violation");
                DisconnectCode::BadRequest
            })?;
            let id = parsed.id;
            match parsed.command {
                Ok(Command::Publish(params)) if self.access.is_some() => {
                    let prepared = match self.prepare(params) {
                        Ok(ready) if self.ctx.hooks.publish_applies(ready.channel()) => {
                            // Publishes before this one need not wait for the backend.
                            self.flush(batch).await;
                            self.ask_publish_hook(ready).await
                        }
                        prepared => prepared,
                    };
                    match prepared {
                        Ok(Prepared::Routed(request)) => {
                            if !batch.fits(&request) {
                                self.flush(batch).await;
                            }
                            batch.push(id, request);
                        }
                        Ok(Prepared::Direct(publication)) => {
                            self.flush(batch).await;
                            let started = Instant::now();
                            let delivered = self.ctx.upstream.deliver(&publication).await;
                            metrics::published(NATIVE, started, 1);
                            self.reply(id, delivered.map(|()| reply::empty(id)));
                        }
                        Err(refusal) => {
                            self.flush(batch).await;
                            self.reply(id, Err(refusal));
                        }
                    }
                }
                command => {
                    self.flush(batch).await;
                    let frame = match command {
                        Ok(command) => self.execute(id, command).await,
                        Err(refusal) => Err(refusal),
                    };
                    self.reply(id, frame);
                    if let Some((document, state)) = self.opening.take() {
                        document.opened(&state, false);
                    }
                }
            }
        }
        Ok(())
    }

    fn reply(&self, id: u64, frame: Result<Utf8Bytes, Refusal>) {
        metrics::replied(NATIVE, &frame);
        self.send(frame.unwrap_or_else(|refusal| reply::error(id, &refusal)));
    }

    /// Sends the batched publishes to a router and answers each, in order.
    async fn flush(&mut self, batch: &mut Batch<u64>) {
        for (id, outcome) in batch.send(&self.ctx.publisher, NATIVE).await {
            let frame = outcome.map(|p| reply::ok(id, &reply::PositionResult::new(&p)));
            self.reply(id, frame);
        }
    }

    /// Asks the publish hook about a checked publish: it comes back as the backend had it,
    /// checked again.
    async fn ask_publish_hook(&self, prepared: Prepared) -> Result<Prepared, Refusal> {
        let rules = self.ctx.channels.rules_for(prepared.channel());
        let bus_limit = self.ctx.upstream.bus().max_payload();
        let limit = Limit::channel(&rules);
        let hooks = &self.ctx.hooks;
        hooks
            .publish(prepared, NATIVE, "", limit, bus_limit, &rules)
            .await
    }

    /// Checks a publish of a connected client.
    fn prepare(&mut self, params: PublishParams) -> Result<Prepared, Refusal> {
        let access = self.access.as_mut().ok_or_else(not_connected)?;
        let rules = access.authorize_publish(&self.ctx.channels, &params.channel)?;
        let data = params.data.get();
        if params.attachments.len() > envelope::MAX_ATTACHMENTS {
            let message = format!("at most {} attachments", envelope::MAX_ATTACHMENTS);
            return Err(Refusal::new(ErrorCode::BadRequest, message));
        }
        let attachments = params
            .attachments
            .iter()
            .map(|a| BASE64.decode(a).map(Bytes::from))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| Refusal::new(ErrorCode::BadRequest, "attachments must be base64"))?;
        envelope::check_event_name(data)?;
        envelope::check_attachments(data, attachments.len())?;
        let publish = Publish {
            channel: params.channel,
            data: Bytes::copy_from_slice(data.as_bytes()),
            attachments,
            publisher: Some(access.client_info(&self.name)),
            idempotency_key: params.idempotency_key,
        };
        let bus_limit = self.ctx.upstream.bus().max_payload();
        publish::prepare(
            publish,
            Limit::channel(&rules),
            bus_limit,
            rules.has_history(),
        )
    }

    fn access(&self) -> Result<&Access, Refusal> {
        self.access.as_ref().ok_or_else(not_connected)
    }

    async fn execute(&mut self, id: u64, command: Command<'_>) -> Result<Utf8Bytes, Refusal> {
        match (&self.access, command) {
            (None, Command::Connect(params)) => self.connect(id, params).await,
            (Some(_), Command::Connect(_)) => Err(Refusal::new(
                ErrorCode::AlreadyConnected,
                "connect was already sent",
            )),
            (_, Command::Ping) => Ok(reply::empty(id)),
            (None, _) => Err(not_connected()),
            (Some(_), Command::Subscribe(params)) => self.subscribe(id, params).await,
            (Some(_), Command::Unsubscribe(params)) => self.unsubscribe(id, params),
            // `handle` sends the publishes of a connected session through a batch instead.
            (Some(_), Command::Publish(_)) => {
                Err(Refusal::new(ErrorCode::Internal, "publish outside a batch"))
            }
            (Some(_), Command::History(params)) => self.history(id, params).await,
            (Some(_), Command::Presence(params)) => self.presence(id, params, false).await,
            (Some(_), Command::PresenceStats(params)) => self.presence(id, params, true).await,
            (Some(_), Command::Refresh(params)) => self.refresh(id, params),
            (Some(_), Command::SyncSubscribe(params)) => self.sync_subscribe(id, params).await,
            (Some(_), Command::SyncUnsubscribe(params)) => self.sync_unsubscribe(id, params),
            (Some(_), Command::SyncGet(params)) => self.sync_get(id, params).await,
            (Some(_), Command::SyncPatch(params)) => self.sync_patch(id, params).await,
            (Some(_), Command::Rpc(params)) => self.rpc(id, params).await,
        }
    }

    /// Calls a method of the app's backend; the reply carries its answer.
    async fn rpc(&mut self, id: u64, params: RpcParams<'_>) -> Result<Utf8Bytes, Refusal> {
        let client = self.hook_client()?;
        let data = params.data.map_or("null", RawValue::get);
        let answer = self.ctx.hooks.rpc(client, &params.method, data).await?;
        let answer = RawValue::from_string(answer)
            .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
        Ok(reply::ok(id, &reply::RpcResult { data: &answer }))
    }

    /// The client as the hooks describe it.
    fn hook_client(&self) -> Result<HookClient, Refusal> {
        let info = self.access()?.client_info(&self.name);
        Ok(hooks::client(&info, NATIVE, ""))
    }

    /// Subscribes to a sync document: the reply holds the state the client starts from
    /// (the patches after its `rev`, or a snapshot), and `sync` pushes follow it.
    async fn sync_subscribe(&mut self, id: u64, params: SyncOptions) -> Result<Utf8Bytes, Refusal> {
        let since = params.since();
        let channel = params.channel;
        sync::authorize_read(&self.ctx, self.access()?, &channel)?;
        if self.documents.contains_key(&channel) {
            return Err(Refusal::new(
                ErrorCode::AlreadySubscribed,
                "already subscribed to this document",
            ));
        }
        self.check_room()?;
        let client = self.hook_client()?;
        self.ctx.hooks.subscribe(&channel, || client).await?;
        let document = SyncSubscriber::new(
            &channel,
            Format::NativeSync,
            self.outbound.clone(),
            self.ctx.upstream.clone(),
        );
        let state = sync::subscribe(&self.ctx.hub, self.id, &document, since).await?;
        let frame = reply::ok(id, &StateView::of(&state));
        self.documents.insert(channel, document.clone());
        self.opening = Some((document, state));
        Ok(frame)
    }

    fn sync_unsubscribe(&mut self, id: u64, params: ChannelParams) -> Result<Utf8Bytes, Refusal> {
        let Some(document) = self.documents.remove(&params.channel) else {
            return Err(Refusal::new(
                ErrorCode::NotSubscribed,
                "not subscribed to this document",
            ));
        };
        self.leave_document(&document);
        Ok(reply::empty(id))
    }

    fn leave_document(&self, document: &SyncSubscriber) {
        self.ctx.hub.unsubscribe(document.channel(), self.id);
        document.stop();
    }

    async fn sync_get(&mut self, id: u64, params: ChannelParams) -> Result<Utf8Bytes, Refusal> {
        sync::authorize_read(&self.ctx, self.access()?, &params.channel)?;
        // Reading a document is subscribing to it once: the hook that can refuse the one
        // can refuse the other.
        let client = self.hook_client()?;
        self.ctx.hooks.subscribe(&params.channel, || client).await?;
        let state = self.ctx.upstream.sync_read(&params.channel, None).await?;
        Ok(reply::ok(id, &StateView::of(&state)))
    }

    async fn sync_patch(
        &mut self,
        id: u64,
        params: PatchOptions<'_>,
    ) -> Result<Utf8Bytes, Refusal> {
        let access = self.access.as_mut().ok_or_else(not_connected)?;
        match sync::patch(&self.ctx, access, &self.name, params.into()).await? {
            Ok(committed) => {
                let position = committed.position.unwrap_or_default();
                let result = reply::PatchResult {
                    rev: position.offset,
                    epoch: &position.epoch,
                    duplicate: committed.duplicate,
                };
                Ok(reply::ok(id, &result))
            }
            Err(conflict) => {
                let refusal = conflict_refusal(&conflict);
                // Counted as the refusal it is; the frame carries the document besides.
                metrics::replied::<()>(NATIVE, &Err(refusal.clone()));
                Ok(reply::conflict(id, &refusal, &ConflictView::of(&conflict)))
            }
        }
    }

    /// Refuses one more subscription past `max_subscriptions` (channels and documents).
    fn check_room(&self) -> Result<(), Refusal> {
        let most = self.ctx.config.max_subscriptions;
        if self.subscriptions.len() + self.documents.len() >= most {
            let message = format!("at most {most} subscriptions per connection");
            return Err(Refusal::new(ErrorCode::LimitExceeded, message));
        }
        Ok(())
    }

    /// Admits the client, and subscribes it to its user's personal channel.
    async fn connect(&mut self, id: u64, params: ConnectParams) -> Result<Utf8Bytes, Refusal> {
        let attempt = Attempt {
            client: &self.name,
            transport: NATIVE,
            namespace: "",
            token: params.token.as_deref(),
            data: params.data.as_deref().map(RawValue::get),
            handshake: &self.handshake,
        };
        let access = Access::admit(&self.ctx.auth, &self.ctx.hooks, &attempt).await?;
        self.ctx.clients.add(self.id, &self.name, access.user());
        let personal = self.ctx.channels.personal_channel(access.user());
        self.access = Some(access);
        if let Some(channel) = &personal {
            let params = SubscribeParams {
                channel: channel.clone(),
                recover: false,
                offset: None,
                epoch: None,
            };
            if let Err(refusal) = self.join(params, By::Herald).await {
                if let Some(access) = self.access.take() {
                    self.ctx.clients.remove(self.id, &self.name, access.user());
                }
                return Err(refusal);
            }
        }
        let access = self.access()?;
        let result = reply::ConnectResult {
            client: &self.name,
            version: env!("CARGO_PKG_VERSION"),
            user: access.user(),
            expires_in: access.identity().expires_in(),
            personal: personal.as_deref(),
        };
        Ok(reply::ok(id, &result))
    }

    fn refresh(&mut self, id: u64, params: RefreshParams) -> Result<Utf8Bytes, Refusal> {
        let auth = &self.ctx.auth;
        let access = self.access.as_mut().ok_or_else(not_connected)?;
        access.refresh(auth, &params.token)?;
        let result = reply::RefreshResult {
            expires_in: access.identity().expires_in(),
        };
        self.reauthorize();
        Ok(reply::ok(id, &result))
    }

    /// Ends, with an `unsubscribe` push each, the subscriptions the connection's token no
    /// longer allows (after a refresh with a token that grants less).
    fn reauthorize(&mut self) {
        let Some(access) = &self.access else { return };
        let channels = &self.ctx.channels;
        let revoked: Vec<String> = self
            .subscriptions
            .iter()
            .chain(self.documents.keys())
            .filter(|channel| {
                access
                    .authorize(channels, channel, Action::Subscribe)
                    .is_err()
            })
            .cloned()
            .collect();
        for channel in revoked {
            if self.subscriptions.remove(&channel) {
                self.leave(&channel);
            } else if let Some(document) = self.documents.remove(&channel) {
                self.leave_document(&document);
            }
            self.send(push::unsubscribe(&channel));
        }
    }

    async fn subscribe(&mut self, id: u64, params: SubscribeParams) -> Result<Utf8Bytes, Refusal> {
        let history = self.ctx.channels.rules_for(&params.channel).has_history();
        let (position, recovered) = self.join(params, By::Client).await?;
        let result = reply::SubscribeResult {
            position: reply::PositionResult::of(&position, history),
            recovered,
        };
        Ok(reply::ok(id, &result))
    }

    /// Subscribes to a channel, with the checks that apply to whoever asks; with
    /// `recover`, first delivers what the client missed after `offset` of `epoch`, as
    /// publication pushes. Returns the position live publications follow, and with
    /// `recover` whether nothing was missed.
    async fn join(
        &mut self,
        params: SubscribeParams,
        by: By,
    ) -> Result<(Position, Option<bool>), Refusal> {
        let channel = params.channel;
        let access = self.access()?;
        let rules = match by {
            By::Backend => self.ctx.channels.rules_for(&channel),
            By::Client | By::Herald => {
                access.authorize(&self.ctx.channels, &channel, Action::Subscribe)?
            }
        };
        sync::check_rules(&rules, false)?;
        if self.subscriptions.contains(&channel) {
            return Err(Refusal::new(
                ErrorCode::AlreadySubscribed,
                "already subscribed to this channel",
            ));
        }
        self.check_room()?;
        let mut client = access.client_info(&self.name);
        if by == By::Client {
            let about = || hooks::client(&client, NATIVE, "");
            if let Some(info) = self.ctx.hooks.subscribe(&channel, about).await? {
                client.info = Bytes::from(info);
            }
        }
        let history = rules.has_history();
        let returning = Returning {
            hub: &self.ctx.hub,
            upstream: &self.ctx.upstream,
            id: self.id,
            subscriber: self.subscriber.clone(),
            history,
        };
        // The client names the offset it recovers from, so recovery is a history read:
        // without that permission it starts from now (`recovered: false`).
        let may_recover = history
            && rules.recovery
            && access
                .authorize(&self.ctx.channels, &channel, Action::ReadHistory)
                .is_ok();
        let from = match (params.recover, params.offset, params.epoch) {
            (true, Some(offset), Some(epoch)) if may_recover => Some(Position { offset, epoch }),
            _ => None,
        };
        let (position, recovered) = match from {
            Some(from) => {
                let outbound = &self.outbound;
                let replay = |p: &_| {
                    if let Some(frame) = push::publication(p) {
                        outbound.send(frame);
                    }
                };
                match returning.subscribe_after(&channel, from, replay).await? {
                    Resumed::Recovered(position) => (position, Some(true)),
                    Resumed::Lost(position) => (position, Some(false)),
                }
            }
            None => {
                let position = self
                    .ctx
                    .hub
                    .subscribe(&channel, self.id, self.subscriber.clone(), history)
                    .await?;
                (position, params.recover.then_some(false))
            }
        };
        if rules.tracks_presence() {
            self.ctx.presence.join(&channel, client);
        }
        self.subscriptions.insert(channel);
        Ok((position, recovered))
    }

    fn unsubscribe(&mut self, id: u64, params: ChannelParams) -> Result<Utf8Bytes, Refusal> {
        if !self.subscriptions.remove(&params.channel) {
            return Err(Refusal::new(
                ErrorCode::NotSubscribed,
                "not subscribed to this channel",
            ));
        }
        self.leave(&params.channel);
        Ok(reply::empty(id))
    }

    fn leave(&self, channel: &str) {
        self.ctx.hub.unsubscribe(channel, self.id);
        if self.ctx.channels.rules_for(channel).tracks_presence() {
            self.ctx.presence.leave(channel, &self.name);
        }
    }

    async fn presence(
        &mut self,
        id: u64,
        params: ChannelParams,
        stats: bool,
    ) -> Result<Utf8Bytes, Refusal> {
        let access = self.access()?;
        access.authorize(&self.ctx.channels, &params.channel, Action::ReadPresence)?;
        let upstream = &self.ctx.upstream;
        if !stats {
            let clients = upstream.presence(&params.channel).await?;
            return Ok(reply::presence(id, &clients));
        }
        let stats = upstream.presence_stats(&params.channel).await?;
        let result = reply::PresenceStatsResult {
            num_clients: stats.clients,
            num_users: stats.users,
        };
        Ok(reply::ok(id, &result))
    }

    async fn history(&mut self, id: u64, params: HistoryParams) -> Result<Utf8Bytes, Refusal> {
        let access = self.access()?;
        let rules = access.authorize(&self.ctx.channels, &params.channel, Action::ReadHistory)?;
        if rules.sync {
            // A document's patches are the document: reading them takes reading it.
            sync::authorize_read(&self.ctx, access, &params.channel)?;
        }
        let config = &self.ctx.config;
        let limit = params.limit.unwrap_or(config.history_default_limit);
        if limit > config.history_max_limit {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!("limit exceeds {}", config.history_max_limit),
            ));
        }
        let request = HistoryRequest {
            channel: params.channel,
            since: params.since,
            limit,
            reverse: params.reverse,
        };
        let page = self.ctx.upstream.history(request).await?;
        Ok(reply::history(id, &page))
    }

    fn leave_all(&mut self) {
        for channel in std::mem::take(&mut self.subscriptions) {
            self.leave(&channel);
        }
        for document in std::mem::take(&mut self.documents).into_values() {
            self.leave_document(&document);
        }
    }
}

/// The connection's registrations end with it, however its task ends: a panic on one
/// connection must not leave its subscriptions in the hub and presence forever.
impl Drop for Session {
    fn drop(&mut self) {
        self.ctx.clients.close(self.id);
        self.leave_all();
    }
}

/// Who asks for a subscription, which decides what is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum By {
    /// The client: its permissions, then the subscribe hook.
    Client,
    /// Herald itself (the personal channel): the client's permissions.
    Herald,
    /// The app's backend, through the server API, which is trusted: nothing.
    Backend,
}

fn not_connected() -> Refusal {
    Refusal::new(ErrorCode::NotConnected, "send connect first")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::extract::ws::Message;
    use herald_core::config::Config;
    use serde_json::{Value, json};

    use super::run;
    use crate::context::Context;
    use crate::testing::{self, Peer};

    async fn session() -> Peer {
        let ctx = testing::context(&Config::default()).await;
        open(&ctx)
    }

    fn open(ctx: &Arc<Context>) -> Peer {
        let (sink, stream, peer) = testing::connection();
        tokio::spawn(run(
            sink,
            stream,
            ctx.clone(),
            crate::hooks::Handshake::default(),
            testing::permit(),
        ));
        peer
    }

    /// The reply to command `id`, skipping pushes (kept in `pushes`).
    async fn reply_to(peer: &mut Peer, id: u64, pushes: &mut Vec<Value>) -> Value {
        loop {
            let frame = peer.json().await;
            if frame["id"] == id {
                return frame;
            }
            pushes.push(frame);
        }
    }

    #[tokio::test]
    async fn a_sync_document_reaches_subscribers_in_revision_order() {
        let config = Config::from_toml("[channels.namespaces.doc]\nsync = true").unwrap();
        let ctx = testing::context(&config).await;
        let (mut alice, mut bob) = (open(&ctx), open(&ctx));
        let mut pushes = Vec::new();
        for peer in [&mut alice, &mut bob] {
            peer.send(&[
                r#"{"id":1,"method":"connect","params":{}}"#,
                r#"{"id":2,"method":"sync_subscribe","params":{"channel":"doc:1"}}"#,
            ]);
            reply_to(peer, 1, &mut pushes).await;
            let state = reply_to(peer, 2, &mut pushes).await;
            assert_eq!(
                state["result"],
                json!({"rev": 0, "epoch": "", "snapshot": true, "doc": {}})
            );
        }
        alice.send(&[
            r#"{"id":3,"method":"sync_patch","params":{"channel":"doc:1","patch":{"a":1,"b":{"c":2}}}}"#,
            r#"{"id":4,"method":"sync_patch","params":{"channel":"doc:1","patch":{"b":{"c":null}},"base_rev":1}}"#,
            r#"{"id":5,"method":"sync_patch","params":{"channel":"doc:1","patch":{"a":9},"base_rev":1}}"#,
            r#"{"id":6,"method":"sync_patch","params":{"channel":"doc:1","patch":[1]}}"#,
            r#"{"id":7,"method":"publish","params":{"channel":"doc:1","data":1}}"#,
        ]);
        let mut alice_pushes = Vec::new();
        assert_eq!(
            reply_to(&mut alice, 3, &mut alice_pushes).await["result"]["rev"],
            1
        );
        assert_eq!(
            reply_to(&mut alice, 4, &mut alice_pushes).await["result"]["rev"],
            2
        );
        let conflict = reply_to(&mut alice, 5, &mut alice_pushes).await;
        assert_eq!(conflict["error"]["code"], 115, "{conflict}");
        assert_eq!(conflict["error"]["rev"], 2, "{conflict}");
        assert_eq!(
            conflict["error"]["doc"],
            json!({"a": 1, "b": {}}),
            "{conflict}"
        );
        let malformed = reply_to(&mut alice, 6, &mut alice_pushes).await;
        assert_eq!(malformed["error"]["code"], 107, "{malformed}");
        let publish = reply_to(&mut alice, 7, &mut alice_pushes).await;
        assert_eq!(publish["error"]["code"], 108, "{publish}");
        for patch in [json!({"a": 1, "b": {"c": 2}}), json!({"b": {"c": null}})] {
            let push = bob.json().await;
            assert_eq!(push["push"], "sync", "{push}");
            assert_eq!(push["patch"], patch, "{push}");
        }
        ctx.upstream.sync_delete("doc:1").await.expect("deleted");
        let reset = bob.json().await;
        assert_eq!(reset["doc"], json!({}), "{reset}");
        assert_eq!(reset["rev"], 0, "{reset}");
        assert_ne!(reset["epoch"], "", "{reset}");
    }

    #[tokio::test]
    async fn publishes_sent_together_are_answered_in_order() {
        let mut peer = session().await;
        let mut frames = vec![r#"{"id":1,"method":"connect","params":{}}"#.to_string()];
        for n in 2..=9 {
            let publish = json!({"id": n, "method": "publish",
                "params": {"channel": "chat", "data": {"n": n}}});
            frames.push(publish.to_string());
        }
        peer.send(&frames.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(peer.json().await["result"]["client"].is_string());
        for n in 2..=9u64 {
            let reply = peer.json().await;
            assert_eq!(reply["id"], n, "{reply}");
            assert_eq!(reply["result"]["offset"], n - 1, "{reply}");
        }
    }

    #[tokio::test]
    async fn replies_before_an_offending_frame_reach_the_client_before_the_close() {
        let mut peer = session().await;
        peer.send(&[
            r#"{"id":1,"method":"connect","params":{}}"#,
            r#"{"id":2,"method":"ping"}"#,
            "not a command",
            r#"{"id":3,"method":"ping"}"#,
        ]);
        assert!(peer.json().await["result"]["client"].is_string());
        assert_eq!(peer.json().await["id"], 2);
        let farewell = peer.json().await;
        assert_eq!(farewell["push"], "disconnect", "{farewell}");
        assert_eq!(farewell["code"], 3501, "{farewell}");
        match peer.next().await {
            Some(Message::Close(Some(close))) => assert_eq!(close.code, 3501),
            other => panic!("expected the close frame, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod footprint {
    use herald_core::config::Config;

    use crate::testing;

    /// Every connection holds its session's task for its whole life, mostly idle: the task
    /// must hold the loop's state only, with the work it does now and then boxed (issue 17:
    /// an idle connection's memory).
    #[tokio::test]
    async fn an_idle_connections_tasks_stay_small() {
        let ctx = testing::context(&Config::default()).await;
        let (sink, stream, _peer) = testing::connection();
        let session = super::run(
            sink,
            stream,
            ctx.clone(),
            crate::hooks::Handshake::default(),
            testing::permit(),
        );
        let size = std::mem::size_of_val(&session);
        assert!(size <= 1152, "a native session's task holds {size} bytes");
        let (sink, _, _peer) = testing::connection();
        let (outbound, frames) = crate::outbound::channel(ctx.outbound_bounds());
        let closer = outbound.closer().clone();
        let writer = crate::outbound::write_loop(sink, frames, closer, super::push::disconnect);
        let size = std::mem::size_of_val(&writer);
        assert!(size <= 384, "a writer's task holds {size} bytes");
    }
}
