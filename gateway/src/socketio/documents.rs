//! Sync documents for Socket.IO sockets: the `herald:sync`, `herald:unsync`,
//! `herald:sync_get` and `herald:patch` events, answered in their acks, and
//! `herald:change` pushes (see [`crate::sync`] for what they guarantee).

use std::sync::Arc;

use herald_core::codes::{ErrorCode, Refusal};
use herald_core::upstream::conflict_refusal;
use herald_proto::bus::v1::SyncState;
use serde_json::{Value, json};

use super::reserved::SyncOptions;
use super::socket::{Ack, Conn, Socket};
use crate::render::Format;
use crate::sync::wire::{ConflictView, StateView};
use crate::sync::{self, SyncSubscriber};

/// A document subscribed to whose state is in the ack being sent: its changes may flow
/// once the ack is queued.
pub(super) struct Opening {
    pub(super) document: Arc<SyncSubscriber>,
    pub(super) state: SyncState,
}

impl Opening {
    /// Lets the document's changes flow. `acked`: the state went out in an ack; otherwise
    /// (the event asked for none) it goes out now, as a `herald:change`.
    pub(super) fn open(self, acked: bool) {
        self.document.opened(&self.state, !acked);
    }
}

/// `{ok: true, …state}`.
fn state_ack(state: &SyncState) -> Result<Ack, Refusal> {
    let mut value = serde_json::to_value(StateView::of(state))
        .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
    if let Value::Object(fields) = &mut value {
        fields.insert("ok".into(), Value::Bool(true));
    }
    Ok(Ack::from(value))
}

impl Conn {
    /// `herald:sync`: subscribes the socket to a document.
    pub(super) async fn sync(
        &self,
        socket: &mut Socket,
        options: SyncOptions,
    ) -> Result<(Ack, Opening), Refusal> {
        let ctx = &self.ctx;
        let since = options.since();
        let channel = options.channel;
        sync::authorize_read(ctx, &socket.access, &channel)?;
        if socket.documents.contains_key(&channel) {
            return Err(Refusal::new(
                ErrorCode::AlreadySubscribed,
                "already subscribed to this document",
            ));
        }
        let most = ctx.socketio.max_rooms;
        if socket.rooms() + socket.documents.len() >= most {
            let message = format!("at most {most} rooms and documents per socket");
            return Err(Refusal::new(ErrorCode::LimitExceeded, message));
        }
        ctx.hooks
            .subscribe(&channel, || socket.hook_client())
            .await?;
        let format = Format::SocketIoSync {
            namespace: socket.namespace.clone(),
        };
        let document = SyncSubscriber::new(
            &channel,
            format,
            self.outbound.clone(),
            ctx.upstream.clone(),
        );
        let state = sync::subscribe(&ctx.hub, socket.id, &document, since).await?;
        let ack = state_ack(&state)?;
        socket.documents.insert(channel, document.clone());
        Ok((ack, Opening { document, state }))
    }

    /// `herald:unsync`.
    pub(super) fn unsync(&self, socket: &mut Socket, channel: &str) -> Result<Ack, Refusal> {
        let document = socket.documents.remove(channel).ok_or_else(|| {
            Refusal::new(ErrorCode::NotSubscribed, "not subscribed to this document")
        })?;
        self.ctx.hub.unsubscribe(channel, socket.id);
        document.stop();
        Ok(Ack::from(json!({ "ok": true })))
    }

    /// `herald:sync_get`: a snapshot.
    pub(super) async fn sync_get(&self, socket: &Socket, channel: &str) -> Result<Ack, Refusal> {
        sync::authorize_read(&self.ctx, &socket.access, channel)?;
        self.ctx
            .hooks
            .subscribe(channel, || socket.hook_client())
            .await?;
        let state = self.ctx.upstream.sync_read(channel, None).await?;
        state_ack(&state)
    }

    /// `herald:patch`: `{ok: true, rev, epoch}`; a conflict is `{ok: false, error: {code:
    /// 115, message, rev, epoch, doc}}`.
    pub(super) async fn patch(
        &self,
        socket: &mut Socket,
        patch: sync::Patch,
    ) -> Result<Ack, Refusal> {
        let sid = socket.sid.clone();
        match sync::patch(&self.ctx, &mut socket.access, &sid, patch).await? {
            Ok(committed) => {
                let position = committed.position.unwrap_or_default();
                let mut value =
                    json!({ "ok": true, "rev": position.offset, "epoch": position.epoch });
                if committed.duplicate {
                    value["duplicate"] = Value::Bool(true);
                }
                Ok(Ack::from(value))
            }
            Err(conflict) => {
                let refusal = conflict_refusal(&conflict);
                let mut error = serde_json::to_value(ConflictView::of(&conflict))
                    .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
                error["code"] = json!(refusal.code.code());
                error["message"] = json!(refusal.message);
                Ok(Ack {
                    value: json!({ "ok": false, "error": error }),
                    refused: Some(refusal),
                    ..Ack::default()
                })
            }
        }
    }
}
