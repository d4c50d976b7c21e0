//! Asking every gateway at once: a control command on `<prefix>.control`, with a one-off
//! inbox for the answers, gathered until every gateway the heartbeats know has answered
//! or the time is up.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use herald_core::bus::{Bus, BusError};
use herald_core::subjects::Subjects;
use herald_proto::bus::v1::{ControlCommand, ControlReply, control_command::Action};
use prost::Message;
use tokio::time::Instant;

use super::nodes::Nodes;

pub struct Gateways {
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    nodes: Arc<Nodes>,
    /// Longest wait for the answers.
    timeout: Duration,
}

impl Gateways {
    pub fn new(
        bus: Arc<dyn Bus>,
        subjects: Subjects,
        nodes: Arc<Nodes>,
        timeout: Duration,
    ) -> Self {
        Self {
            bus,
            subjects,
            nodes,
            timeout,
        }
    }

    pub fn nodes(&self) -> &Nodes {
        &self.nodes
    }

    /// Sends `action` to every gateway; their answers.
    pub async fn ask(&self, action: Action) -> Result<Vec<ControlReply>, BusError> {
        let id: u64 = rand::random();
        let inbox = self.subjects.inbox(&format!("{id:016x}"));
        let mut answers = self.bus.subscribe(inbox.clone()).await?;
        // The inbox must be live before any gateway can answer.
        self.bus.flush().await?;
        let command = ControlCommand {
            reply_to: inbox,
            action: Some(action),
        };
        let payload = Bytes::from(command.encode_to_vec());
        self.bus.publish(self.subjects.control(), payload).await?;
        let expected = self.nodes.gateways();
        let deadline = Instant::now() + self.timeout;
        let mut replies = Vec::new();
        while expected == 0 || replies.len() < expected {
            match tokio::time::timeout_at(deadline, answers.next()).await {
                Ok(Some(message)) => {
                    if let Ok(reply) = ControlReply::decode(message.payload) {
                        replies.push(reply);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        Ok(replies)
    }
}
