//! The Socket.IO endpoint of one gateway: its Engine.IO sessions by sid, the token that
//! starts every sid it makes, and the tracker its session tasks run on, beside the session
//! context its sockets use.

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use super::link::Links;
use super::{new_token, random_id};
use crate::context::Context;

pub struct Endpoint {
    pub ctx: Arc<Context>,
    /// Engine.IO sessions held here, for polling requests and upgrades.
    pub links: Arc<Links>,
    /// Starts every Engine.IO sid made here, so any gateway can tell where a session lives.
    pub token: String,
    /// The gateway's session tasks, which its drain waits for.
    pub sessions: TaskTracker,
}

impl Endpoint {
    pub fn new(ctx: Arc<Context>, sessions: TaskTracker) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            links: Arc::default(),
            token: new_token(),
            sessions,
        })
    }

    /// A new Engine.IO session id: this gateway's token, then random characters.
    pub fn new_sid(&self) -> String {
        self.token.clone() + &random_id::<12>()
    }
}
