//! What the gateway knows of one client, the same for every protocol: who its token (or
//! the connect hook) says it is, what it may do on which channel, how fast it may publish,
//! and when its admission runs out.

use std::time::Duration;

use bytes::Bytes;
use herald_core::auth::{AuthError, Identity, Verifier};
use herald_core::codes::{ErrorCode, Refusal};
use herald_core::config::{ChannelRules, ChannelsConfig};
use herald_core::rules::Action;
use herald_proto::bus::v1::ClientInfo;
use tokio::time::Instant;

use crate::hooks::{self, Attempt, Hooks, Renewal};
use crate::rate::PublishLimits;

pub struct Access {
    identity: Identity,
    limits: PublishLimits,
    /// When the token (or the connect hook's admission) expires, on the runtime's clock.
    expires: Option<Instant>,
    /// When to ask the refresh hook to extend an admission of the connect hook.
    renewal: Option<Instant>,
}

impl Access {
    /// Admits a client: as the connect hook says, when it has a say, or as its token does.
    pub async fn admit(
        verifier: &Verifier,
        hooks: &Hooks,
        attempt: &Attempt<'_>,
    ) -> Result<Self, Refusal> {
        if let Some(identity) = hooks.connect(attempt).await? {
            let mut access = Self::new(identity);
            if hooks.renews() {
                access.renewal = access.expires.map(hooks::renewal_time);
            }
            return Ok(access);
        }
        Ok(Self::new(verifier.verify(attempt.token)?))
    }

    fn new(identity: Identity) -> Self {
        Self {
            expires: deadline(&identity),
            identity,
            limits: PublishLimits::default(),
            renewal: None,
        }
    }

    /// When the refresh hook is due to extend the admission.
    pub fn renewal(&self) -> Option<Instant> {
        self.renewal
    }

    /// Asks the refresh hook to extend the admission of the client known as `client`
    /// (transport and namespace as for the hooks); when it does not, the connection ends
    /// at its expiry.
    pub async fn renew(&mut self, hooks: &Hooks, client: &str, transport: &str, namespace: &str) {
        let about = hooks::client(&self.client_info(client), transport, namespace);
        self.renewal = None;
        match hooks.refresh(about).await {
            Renewal::Until { expires_at, info } => {
                self.identity.expires_at = expires_at;
                if info.is_some() {
                    self.identity.info = info;
                }
                self.expires = deadline(&self.identity);
                self.renewal = self.expires.map(hooks::renewal_time);
            }
            Renewal::Ended => {}
            Renewal::Retry(after) => {
                let until = Instant::now() + after;
                self.expires = Some(self.expires.map_or(until, |at| at.max(until)));
                self.renewal = self.expires.map(hooks::renewal_time);
            }
        }
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
        // From now on the token says how long the connection lasts.
        self.renewal = None;
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
