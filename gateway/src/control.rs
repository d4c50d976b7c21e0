//! Commands of the server API to every gateway (`<prefix>.control`): disconnect clients,
//! subscribe or unsubscribe a user, list the channels with local subscribers. Each gateway answers on
//! the command's `reply_to` with what it did, so the API can add up the cluster.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use herald_core::bus::BusError;
use herald_proto::bus::v1::{ChannelCount, ControlCommand, ControlReply, control_command::Action};
use prost::Message;
use tokio::task::JoinHandle;
use wildmatch::WildMatch;

use crate::clients::Command;
use crate::context::Context;

/// Subscribes to control commands and answers them, until the returned task is aborted
/// or the subscription ends.
pub async fn listen(ctx: Arc<Context>) -> Result<JoinHandle<()>, BusError> {
    let bus = ctx.upstream.bus().clone();
    let mut commands = bus.subscribe(ctx.upstream.subjects().control()).await?;
    Ok(tokio::spawn(async move {
        while let Some(message) = commands.next().await {
            let Ok(command) = ControlCommand::decode(message.payload) else {
                continue;
            };
            let reply = answer(&ctx, command.action);
            if command.reply_to.is_empty() {
                continue;
            }
            let payload = Bytes::from(reply.encode_to_vec());
            if let Err(e) = bus.publish(command.reply_to, payload).await {
                tracing::debug!(error = %e, "control reply not sent");
            }
        }
    }))
}

fn answer(ctx: &Context, action: Option<Action>) -> ControlReply {
    let mut reply = ControlReply {
        node: ctx.node_id.clone(),
        ..Default::default()
    };
    match action {
        Some(Action::Disconnect(who)) => {
            let command = Command::Disconnect {
                user: who.user.clone(),
                client: who.client.clone(),
            };
            reply.affected = ctx.clients.send(&who.user, &who.client, command);
        }
        Some(Action::Subscribe(who)) => {
            let command = Command::Subscribe {
                user: who.user.clone(),
                channel: who.channel,
            };
            reply.affected = ctx.clients.send(&who.user, "", command);
        }
        Some(Action::Unsubscribe(who)) => {
            let command = Command::Unsubscribe {
                user: who.user.clone(),
                channel: who.channel,
            };
            reply.affected = ctx.clients.send(&who.user, "", command);
        }
        Some(Action::Channels(pattern)) => {
            let pattern = WildMatch::new(if pattern.is_empty() { "*" } else { &pattern });
            reply.channels = ctx
                .hub
                .channel_counts(|channel| pattern.matches(channel))
                .into_iter()
                .map(|(channel, subscribers)| ChannelCount {
                    channel,
                    subscribers,
                })
                .collect();
        }
        None => {}
    }
    reply
}
