//! What the gateway knows of one client, the same for every protocol: who its token says
//! it is, what it may do on which channel, how fast it may publish, and when its token
//! runs out.

use std::time::Duration;

use bytes::Bytes;
use herald_core::auth::{AuthError, Identity, Verifier};
use herald_core::codes::{ErrorCode, Refusal};
use herald_core::config::{ChannelRules, ChannelsConfig};
use herald_core::rules::Action;
use herald_proto::bus::v1::ClientInfo;
use tokio::time::Instant;

use crate::rate::PublishLimits;

pub struct Access {
    identity: Identity,
    limits: PublishLimits,
    /// When the token expires, on the runtime's clock.
    expires: Option<Instant>,
}

impl Access {
    /// Admits the holder of `token`.
    pub fn admit(verifier: &Verifier, token: Option<&str>) -> Result<Self, Refusal> {
        let identity = verifier.verify(token)?;
        Ok(Self {
            expires: deadline(&identity),
            identity,
            limits: PublishLimits::default(),
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn user(&self) -> &str {
        &self.identity.user
    }

    /// When the connection must have presented a fresh token.
    pub fn expires(&self) -> Option<Instant> {
        self.expires
    }

    /// Whether the token has run out.
    pub fn expired(&self) -> bool {
        self.expires.is_some_and(|at| at <= Instant::now())
    }

    /// Takes a fresh token for the same user; the connection keeps everything else.
    pub fn refresh(&mut self, verifier: &Verifier, token: &str) -> Result<(), Refusal> {
        let identity = match verifier.verify(Some(token)) {
            Err(AuthError::Missing) => {
                return Err(Refusal::new(ErrorCode::BadRequest, "refresh needs a token"));
            }
            other => other?,
        };
        if identity.user != self.identity.user {
            return Err(Refusal::new(
                ErrorCode::Unauthorized,
                "the token is for another user",
            ));
        }
        self.expires = deadline(&identity);
        self.identity = identity;
        Ok(())
    }

    /// Checks that the client may do `action` on `channel`; returns the channel's rules.
    pub fn authorize(
        &self,
        channels: &ChannelsConfig,
        channel: &str,
        action: Action,
    ) -> Result<ChannelRules, Refusal> {
        channels.authorize(channel, action, &self.identity)
    }

    /// Checks a publish on `channel`: the permission, then the rate limit.
    pub fn authorize_publish(
        &mut self,
        channels: &ChannelsConfig,
        channel: &str,
    ) -> Result<ChannelRules, Refusal> {
        let rules = self.authorize(channels, channel, Action::Publish)?;
        self.limits.take(channel, &rules)?;
        Ok(rules)
    }

    /// The client as presence shows it, under the connection id `client`.
    pub fn client_info(&self, client: &str) -> ClientInfo {
        ClientInfo {
            client: client.to_string(),
            user: self.identity.user.clone(),
            info: self
                .identity
                .info
                .as_ref()
                .map(|info| Bytes::copy_from_slice(info.as_bytes()))
                .unwrap_or_default(),
        }
    }
}

/// When the token runs out on the runtime's clock; `None` also for an `exp` so far ahead
/// that the clock cannot represent it (it never runs out in practice).
fn deadline(identity: &Identity) -> Option<Instant> {
    let secs = identity.expires_in()?;
    Instant::now().checked_add(Duration::from_secs(secs))
}
