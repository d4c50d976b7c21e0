//! Sync documents on a gateway: a subscriber that gets a document's state first and then
//! every patch in revision order, whatever happens on the way, for both protocols.
//!
//! A [`SyncSubscriber`] joins the hub like any subscriber, but with a gate: until the
//! client has been sent the state it starts from (the reply to its subscribe), live patches
//! wait behind the gate; then each patch goes out only if it is the next revision of what
//! the client has. A patch that is not (a gap the feed had to skip, a new epoch after the
//! document was deleted) closes the gate again, and the subscriber brings the client up to
//! date by itself: it asks a router for the patches after the client's revision, or a
//! snapshot, pushes that state, and opens the gate. So a client that applies what it
//! receives, in order, always holds the router's document at the revision it was last told.
//!
//! - [`subscriber`]: the gated subscriber.
//! - [`wire`]: the JSON clients see.

pub mod subscriber;
pub mod wire;

use std::sync::Arc;

use bytes::Bytes;
use herald_core::codes::{ErrorCode, Refusal};
use herald_core::config::ChannelRules;
use herald_core::rules::Action;
use herald_proto::bus::v1::{Position, SyncCommitted, SyncConflict, SyncPatch, SyncState};

use crate::access::Access;
use crate::context::Context;
use crate::hub::{Hub, SubscriberId};

pub use subscriber::SyncSubscriber;

/// Refuses a sync operation on a channel whose namespace has no sync documents, and a
/// plain subscribe or publish on one that has.
pub fn check_rules(rules: &ChannelRules, sync: bool) -> Result<(), Refusal> {
    match (rules.sync, sync) {
        (true, true) | (false, false) => Ok(()),
        (false, true) => Err(Refusal::new(
            ErrorCode::NotAvailable,
            "the channel's namespace has no sync documents (`sync = true`)",
        )),
        (true, false) => Err(Refusal::new(
            ErrorCode::NotAvailable,
            "the channel carries a sync document: use the sync commands",
        )),
    }
}

/// Subscribes `subscriber`, known to the hub as `id`, and reads the state its client
/// starts from: the patches after `since`, or a snapshot. The caller sends that state to
/// the client and then calls [`SyncSubscriber::opened`].
pub async fn subscribe(
    hub: &Arc<Hub>,
    id: SubscriberId,
    subscriber: &Arc<SyncSubscriber>,
    since: Option<Position>,
) -> Result<SyncState, Refusal> {
    let channel = subscriber.channel();
    hub.subscribe(channel, id, subscriber.clone(), true).await?;
    // Read after joining: every patch committed after this read reaches the subscriber.
    match subscriber.upstream.sync_read(channel, since).await {
        Ok(state) => Ok(state),
        Err(refusal) => {
            hub.unsubscribe(channel, id);
            subscriber.stop();
            Err(refusal)
        }
    }
}

/// Checks that a client may read `channel`'s document: its `subscribe` access.
pub fn authorize_read(ctx: &Context, access: &Access, channel: &str) -> Result<(), Refusal> {
    let rules = access.authorize(&ctx.channels, channel, Action::Subscribe)?;
    check_rules(&rules, true)
}

/// A client's patch of a document.
pub struct Patch {
    pub channel: String,
    /// JSON text, checked by the router.
    pub patch: Bytes,
    pub base_rev: Option<u64>,
    /// The epoch `base_rev` is of, if the client says.
    pub base_epoch: Option<String>,
    pub idempotency_key: Option<String>,
}

impl From<wire::PatchOptions<'_>> for Patch {
    fn from(options: wire::PatchOptions<'_>) -> Self {
        Self {
            channel: options.channel,
            patch: Bytes::copy_from_slice(options.patch.get().as_bytes()),
            base_rev: options.base_rev,
            base_epoch: options.base_epoch,
            idempotency_key: options.idempotency_key,
        }
    }
}

/// Applies a client's patch, if it may patch the document (its `publish` access and
/// rate): the revision, or the conflict that kept it from being applied.
pub async fn patch(
    ctx: &Context,
    access: &mut Access,
    client: &str,
    patch: Patch,
) -> Result<Result<SyncCommitted, SyncConflict>, Refusal> {
    let rules = access.authorize_publish(&ctx.channels, &patch.channel)?;
    check_rules(&rules, true)?;
    let request = SyncPatch {
        patch: patch.patch,
        base_rev: patch.base_rev,
        idempotency_key: patch.idempotency_key.unwrap_or_default(),
        publisher: Some(access.client_info(client)),
        base_epoch: patch.base_epoch.unwrap_or_default(),
    };
    ctx.upstream.sync_patch(&patch.channel, request).await
}
