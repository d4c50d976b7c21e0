//! Channel rules, set per channel namespace in the config, and the one place that decides
//! whether a client may do something on a channel.
//!
//! A channel's namespace is the part of its name before the first `:` (see
//! [`channel::namespace`]). `[channels.default]` holds every rule; a namespace's entry
//! overrides only the rules it names. On top of the rules, two kinds of channel are
//! limited to users by their name: a channel whose name has a `#` (`dm:#alice,bob`) is
//! open only to the users listed after its last `#`, and each user's personal channel
//! (`user:#alice`) is one of those.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::Identity;
use crate::channel;
use crate::codes::{ErrorCode, Refusal};

/// The largest `max_document_size`: a document travels whole in one NATS message (a
/// snapshot), and NATS carries 1 MiB by default.
pub const MAX_DOCUMENT_SIZE: usize = 512 * 1024;

/// Separates a user-limited channel's name from its users.
pub const USER_MARK: char = '#';

/// Who may do something on a channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Every client, anonymous ones included.
    #[default]
    All,
    /// Clients with a token that names a user.
    Users,
    /// Clients whose token grants the channel (its `channels` claim).
    Granted,
    /// No client: only backends, through the server API.
    None,
}

/// How a gateway takes a channel's publications from the bus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// A bus subscription of the channel's own: the gateway receives exactly the channels
    /// its clients are in, and pays about 8 KiB of memory (in the gateway and in NATS) per
    /// channel it holds. Right for channels whose subscribers are many or spread over
    /// gateways.
    #[default]
    Channel,
    /// The subscription of the channel's bucket (one of
    /// [`DELIVERY_BUCKETS`](crate::subjects::DELIVERY_BUCKETS)), shared with every channel
    /// of the namespace in it that the gateway holds: a channel costs a few hundred bytes,
    /// but the gateway also receives, and drops, the publications of the bucket's channels
    /// it does not hold. Right for many channels with few subscribers each, such as
    /// personal channels, whose namespace has it by default.
    Shared,
}

/// What a client asks to do on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Subscribe,
    Publish,
    ReadPresence,
    ReadHistory,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe to",
            Self::Publish => "publish on",
            Self::ReadPresence => "read the presence of",
            Self::ReadHistory => "read the history of",
        }
    }
}

/// The rules of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelRules {
    /// Publications kept per channel; 0 means no history: publications skip the router and
    /// carry no offset.
    pub history_size: u32,
    /// How long history is kept after the last publication.
    #[serde(with = "humantime_serde")]
    pub history_ttl: Duration,
    /// Largest publication of a native client or the server API: bytes of JSON data plus
    /// binary attachments, raw. (Socket.IO events have `socketio.max_payload`.)
    pub max_message_size: usize,
    pub subscribe: Access,
    pub publish: Access,
    pub read_presence: Access,
    pub read_history: Access,
    /// Whether the channel's subscribers are kept in presence.
    pub presence: bool,
    /// Whether subscribers are told when others join and leave.
    pub join_leave: bool,
    /// Whether a subscriber may ask for what it missed when it subscribes again.
    pub recovery: bool,
    /// Publications per second one connection may make on channels of the namespace, on
    /// average; 0 means no limit.
    pub publish_rate: f64,
    /// Publications one connection may make at once above the rate.
    pub publish_burst: u32,
    /// Whether the channel carries a sync document (see `docs/sync.md`) instead of
    /// publications: clients read it with `subscribe` access and patch it with `publish`
    /// access.
    pub sync: bool,
    /// Patches of a sync document kept for catch-up; a client further behind gets a
    /// snapshot.
    pub sync_history: u32,
    /// Largest sync document, in bytes of JSON; a patch that would make it larger is
    /// refused.
    pub max_document_size: usize,
    /// How long a sync document is kept after it was last patched or read.
    #[serde(with = "humantime_serde")]
    pub sync_ttl: Duration,
    /// How gateways take the channel's publications from the bus.
    pub delivery: Delivery,
}

impl Default for ChannelRules {
    fn default() -> Self {
        Self {
            history_size: 1000,
            history_ttl: Duration::from_secs(300),
            max_message_size: 64 * 1024,
            subscribe: Access::All,
            publish: Access::All,
            read_presence: Access::All,
            read_history: Access::All,
            presence: false,
            join_leave: false,
            recovery: true,
            publish_rate: 0.0,
            publish_burst: 10,
            sync: false,
            sync_history: 1000,
            max_document_size: 64 * 1024,
            sync_ttl: Duration::from_secs(30 * 24 * 3600),
            delivery: Delivery::Channel,
        }
    }
}

impl ChannelRules {
    /// Whether the channel's stream has offsets, kept in order by the routers: a channel
    /// with history, or a sync document (whose patches are its stream).
    pub fn has_history(&self) -> bool {
        self.history_size > 0 || self.sync
    }

    /// Whether presence is reported for the channel's subscribers.
    pub fn tracks_presence(&self) -> bool {
        self.presence || self.join_leave
    }

    fn access(&self, action: Action) -> Access {
        match action {
            Action::Subscribe => self.subscribe,
            Action::Publish => self.publish,
            Action::ReadPresence => self.read_presence,
            Action::ReadHistory => self.read_history,
        }
    }
}

/// A namespace's overrides: any subset of [`ChannelRules`]' fields.
pub type NamespaceRules = Map<String, Value>;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelsConfig {
    /// Rules for channels whose namespace has no entry of its own, and the base of those
    /// that have one.
    pub default: ChannelRules,
    /// Rules by namespace (the part of a channel name before the first `:`).
    pub namespaces: BTreeMap<String, NamespaceRules>,
    /// Namespace of every user's personal channel (`user:#alice`), which each connection
    /// of a user is subscribed to on connect. Empty: no personal channels.
    pub personal_namespace: String,
    #[serde(skip)]
    resolved: OnceLock<Result<BTreeMap<String, ChannelRules>, String>>,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        Self {
            default: ChannelRules::default(),
            namespaces: BTreeMap::new(),
            personal_namespace: "user".into(),
            resolved: OnceLock::new(),
        }
    }
}

impl ChannelsConfig {
    /// Checks every namespace's rules; the message names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let resolved = self.resolved()?;
        if !self.personal_namespace.is_empty()
            && (self.personal_namespace.contains([':', USER_MARK])
                || channel::validate(&self.personal_namespace).is_err())
        {
            return Err(format!(
                "channels.personal_namespace {:?} must be a channel name without ':' or '#'",
                self.personal_namespace
            ));
        }
        if self.default.sync {
            return Err(
                "channels.default: sync documents are for namespaces of their own (sync = true \
                 under [channels.namespaces.<name>])"
                    .into(),
            );
        }
        let all = std::iter::once(("default", &self.default))
            .chain(resolved.iter().map(|(name, rules)| (name.as_str(), rules)));
        for (name, rules) in all {
            if rules.has_history() && rules.history_ttl.is_zero() {
                return Err(format!("channels.{name}: history_ttl must be positive"));
            }
            if !(rules.publish_rate.is_finite() && rules.publish_rate >= 0.0) {
                return Err(format!("channels.{name}: publish_rate must be 0 or more"));
            }
            if rules.publish_rate > 0.0 && rules.publish_burst == 0 {
                return Err(format!("channels.{name}: publish_burst must be at least 1"));
            }
            if rules.sync && name.starts_with('/') {
                return Err(format!(
                    "channels.{name}: a Socket.IO namespace cannot hold sync documents"
                ));
            }
            if rules.sync && name == self.personal_namespace {
                return Err(format!(
                    "channels.{name}: the personal namespace cannot hold sync documents"
                ));
            }
            if rules.sync
                && (!(2..=MAX_DOCUMENT_SIZE).contains(&rules.max_document_size)
                    || rules.sync_ttl.is_zero())
            {
                return Err(format!(
                    "channels.{name}: a sync namespace needs max_document_size from 2 to \
                     {MAX_DOCUMENT_SIZE} bytes and a positive sync_ttl"
                ));
            }
        }
        Ok(())
    }

    fn resolved(&self) -> Result<&BTreeMap<String, ChannelRules>, String> {
        self.resolved
            .get_or_init(|| self.resolve())
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Lays each namespace's overrides over the default rules.
    fn resolve(&self) -> Result<BTreeMap<String, ChannelRules>, String> {
        let base = serde_json::to_value(self.default).map_err(|e| e.to_string())?;
        let mut resolved = BTreeMap::new();
        for (name, overrides) in &self.namespaces {
            if name.is_empty() || name.contains(':') || channel::validate(name).is_err() {
                return Err(format!(
                    "channels.namespaces.{name:?}: a namespace is a non-empty name without ':'"
                ));
            }
            let mut rules = base.clone();
            if let Value::Object(fields) = &mut rules {
                fields.extend(overrides.clone());
            }
            let rules = serde_json::from_value(rules)
                .map_err(|e| format!("channels.namespaces.{name}: {e}"))?;
            resolved.insert(name.clone(), rules);
        }
        // Personal channels are as many as users, with a subscriber or two each: shared
        // delivery unless their namespace's entry says otherwise.
        if !self.personal_namespace.is_empty() {
            let named = self
                .namespaces
                .get(&self.personal_namespace)
                .is_some_and(|overrides| overrides.contains_key("delivery"));
            if !named {
                resolved
                    .entry(self.personal_namespace.clone())
                    .or_insert(self.default)
                    .delivery = Delivery::Shared;
            }
        }
        Ok(resolved)
    }

    /// The rules of `channel`, from its namespace's entry or the default.
    pub fn rules_for(&self, channel: &str) -> ChannelRules {
        self.resolved()
            .ok()
            .and_then(|resolved| resolved.get(channel::namespace(channel)))
            .copied()
            .unwrap_or(self.default)
    }

    /// The personal channel of `user`, if personal channels are on and `user` is one.
    pub fn personal_channel(&self, user: &str) -> Option<String> {
        self.has_personal_channel(user)
            .then(|| format!("{}:{USER_MARK}{user}", self.personal_namespace))
    }

    /// Whether `user` has a personal channel: they are on, and the name can be one.
    fn has_personal_channel(&self, user: &str) -> bool {
        !self.personal_namespace.is_empty() && !user.is_empty() && !user.contains([',', USER_MARK])
    }

    /// Whether `channel` is `user`'s personal channel, compared in place: it is asked on
    /// every publish, and [`Self::personal_channel`] would build a string each time.
    fn is_personal_channel(&self, channel: &str, user: &str) -> bool {
        self.has_personal_channel(user)
            && channel
                .strip_prefix(self.personal_namespace.as_str())
                .and_then(|rest| rest.strip_prefix(':'))
                .and_then(|rest| rest.strip_prefix(USER_MARK))
                == Some(user)
    }

    /// Checks that `channel` is a valid name and that `who` may do `action` on it; returns
    /// the channel's rules.
    pub fn authorize(
        &self,
        channel: &str,
        action: Action,
        who: &Identity,
    ) -> Result<ChannelRules, Refusal> {
        channel::validate(channel)
            .map_err(|e| Refusal::new(ErrorCode::BadChannel, e.to_string()))?;
        let rules = self.rules_for(channel);
        let denied = |why: &str| {
            Refusal::new(
                ErrorCode::PermissionDenied,
                format!("you may not {} this channel: {why}", action.verb()),
            )
        };
        let access = rules.access(action);
        if access == Access::None {
            return Err(denied("it is for the server API only"));
        }
        // A user-limited channel narrows its namespace's access level, never widens it.
        if let Some(mut users) = limited_users(channel)
            && !(users.any(|user| !who.user.is_empty() && user == who.user) || who.grants(channel))
        {
            return Err(denied("it is limited to other users"));
        }
        // Except a user's own personal channel, which every connection of the user is
        // subscribed to whatever the namespace's access levels say.
        if self.is_personal_channel(channel, &who.user) {
            return Ok(rules);
        }
        match access {
            Access::All => Ok(rules),
            Access::Users if !who.user.is_empty() => Ok(rules),
            Access::Users => Err(denied("it needs a user token")),
            Access::Granted if who.grants(channel) => Ok(rules),
            Access::Granted | Access::None => Err(denied("your token does not grant it")),
        }
    }
}

/// The users of a user-limited channel: the comma-separated names after its last `#`.
pub fn limited_users(channel: &str) -> Option<impl Iterator<Item = &str>> {
    let (_, users) = channel.rsplit_once(USER_MARK)?;
    Some(users.split(',').filter(|user| !user.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn user(name: &str, grants: &[&str]) -> Identity {
        Identity {
            user: name.into(),
            grants: grants.iter().map(|g| g.to_string()).collect(),
            ..Identity::anonymous()
        }
    }

    fn config(toml: &str) -> ChannelsConfig {
        Config::from_toml(toml).unwrap().channels
    }

    #[test]
    fn personal_channels_share_their_delivery_unless_told_otherwise() {
        let channels = config("");
        assert_eq!(channels.rules_for("user:#alice").delivery, Delivery::Shared);
        assert_eq!(channels.rules_for("chat:lobby").delivery, Delivery::Channel);
        let channels = config(
            r#"
            [channels.default]
            history_size = 7
            [channels.namespaces.user]
            history_size = 9
            [channels.namespaces.chat]
            delivery = "shared"
            "#,
        );
        let personal = channels.rules_for("user:#alice");
        assert_eq!(
            (personal.delivery, personal.history_size),
            (Delivery::Shared, 9)
        );
        assert_eq!(channels.rules_for("chat:x").delivery, Delivery::Shared);
        assert_eq!(channels.rules_for("news").delivery, Delivery::Channel);
        let channels = config(
            r#"
            [channels.namespaces.user]
            delivery = "channel"
            "#,
        );
        assert_eq!(
            channels.rules_for("user:#alice").delivery,
            Delivery::Channel
        );
        let channels = config(
            r#"
            [channels]
            personal_namespace = "me"
            [channels.default]
            history_size = 3
            "#,
        );
        let personal = channels.rules_for("me:#alice");
        assert_eq!(
            (personal.delivery, personal.history_size),
            (Delivery::Shared, 3)
        );
        assert_eq!(
            channels.rules_for("user:#alice").delivery,
            Delivery::Channel
        );
    }

    #[test]
    fn namespace_rules_fall_back_to_the_default() {
        let channels = config(
            r#"
            [channels.default]
            history_size = 50
            [channels.namespaces.typing]
            history_size = 0
            [channels.namespaces.chat]
            history_ttl = "1h"
            presence = true
            "#,
        );
        assert!(!channels.rules_for("typing:room1").has_history());
        let chat = channels.rules_for("chat:lobby");
        assert_eq!(chat.history_size, 50);
        assert_eq!(chat.history_ttl, Duration::from_secs(3600));
        assert!(chat.presence);
        assert_eq!(channels.rules_for("news").history_size, 50);
        assert!(!channels.rules_for("news").presence);
    }

    #[test]
    fn bad_rules_are_refused_with_their_namespace() {
        for (toml, expected) in [
            (
                "[channels.namespaces.chat]\nhistory_sise = 1",
                "history_sise",
            ),
            (
                "[channels.namespaces.chat]\nsubscribe = \"friends\"",
                "friends",
            ),
            (
                "[channels.namespaces.chat]\npublish_rate = -1.0",
                "publish_rate",
            ),
            ("[channels.namespaces.\"a:b\"]", "namespace"),
            (
                "[channels]\npersonal_namespace = \"u:x\"",
                "personal_namespace",
            ),
            ("[channels.default]\nsync = true", "channels.default"),
            ("[channels.namespaces.\"/x\"]\nsync = true", "Socket.IO"),
            ("[channels.namespaces.user]\nsync = true", "personal"),
            (
                "[channels.namespaces.doc]\nsync = true\nmax_document_size = 0",
                "max_document_size",
            ),
        ] {
            let error = Config::from_toml(toml).unwrap_err().to_string();
            assert!(error.contains(expected), "{toml}: {error}");
        }
    }

    #[test]
    fn access_levels() {
        let channels = config(
            r#"
            [channels.namespaces.members]
            subscribe = "users"
            [channels.namespaces.vip]
            subscribe = "granted"
            [channels.namespaces.feed]
            publish = "none"
            "#,
        );
        let anonymous = Identity::anonymous();
        let alice = user("alice", &[]);
        let granted = user("bob", &["vip:*"]);
        let may = |channel: &str, action, who: &Identity| {
            channels.authorize(channel, action, who).is_ok()
        };
        assert!(may("news", Action::Subscribe, &anonymous));
        assert!(!may("members:x", Action::Subscribe, &anonymous));
        assert!(may("members:x", Action::Subscribe, &alice));
        assert!(!may("vip:x", Action::Subscribe, &alice));
        assert!(may("vip:x", Action::Subscribe, &granted));
        assert!(may("feed:x", Action::Subscribe, &anonymous));
        assert!(!may("feed:x", Action::Publish, &granted));
        let refusal = channels
            .authorize("", Action::Subscribe, &alice)
            .unwrap_err();
        assert_eq!(refusal.code, ErrorCode::BadChannel);
        let refusal = channels
            .authorize("vip:x", Action::Subscribe, &alice)
            .unwrap_err();
        assert_eq!(refusal.code, ErrorCode::PermissionDenied);
    }

    #[test]
    fn user_limited_channels_admit_only_their_users() {
        let channels = ChannelsConfig::default();
        let dm = "dm:#alice,bob";
        for (who, allowed) in [
            (user("alice", &[]), true),
            (user("bob", &[]), true),
            (user("carol", &[]), false),
            (Identity::anonymous(), false),
            (user("backend", &["dm:*"]), true),
        ] {
            for action in [Action::Subscribe, Action::Publish, Action::ReadHistory] {
                assert_eq!(
                    channels.authorize(dm, action, &who).is_ok(),
                    allowed,
                    "{} {action:?}",
                    who.user
                );
            }
        }
        // A name ending in "#" lists nobody, so nobody may use it.
        assert!(
            channels
                .authorize("dm:#", Action::Subscribe, &Identity::anonymous())
                .is_err()
        );
    }

    #[test]
    fn user_limited_channels_keep_their_namespace_access_level() {
        let channels = config(
            r#"
            [channels.namespaces.vip]
            subscribe = "granted"
            publish = "granted"
            [channels.namespaces.ops]
            subscribe = "none"
            "#,
        );
        let eve = user("eve", &[]);
        for (channel, action) in [
            ("vip:news#eve", Action::Subscribe),
            ("vip:x#eve", Action::Publish),
            ("ops:#eve", Action::Subscribe),
        ] {
            let refusal = channels.authorize(channel, action, &eve).unwrap_err();
            assert_eq!(refusal.code, ErrorCode::PermissionDenied, "{channel}");
        }
        let granted = user("eve", &["vip:*"]);
        assert!(
            channels
                .authorize("vip:news#eve", Action::Subscribe, &granted)
                .is_ok()
        );
        // A grant that covers the channel admits a service to every user's channel in it.
        let carol = user("carol", &["vip:*"]);
        assert!(
            channels
                .authorize("vip:news#eve", Action::Subscribe, &carol)
                .is_ok()
        );
    }

    #[test]
    fn personal_channels() {
        let channels = ChannelsConfig::default();
        assert_eq!(
            channels.personal_channel("alice").as_deref(),
            Some("user:#alice")
        );
        assert_eq!(channels.personal_channel(""), None);
        assert_eq!(channels.personal_channel("a,b"), None);
        let mine = channels.personal_channel("alice").unwrap();
        assert!(
            channels
                .authorize(&mine, Action::Subscribe, &user("alice", &[]))
                .is_ok()
        );
        assert!(
            channels
                .authorize(&mine, Action::Subscribe, &user("eve", &[]))
                .is_err()
        );
        let off = config("[channels]\npersonal_namespace = \"\"");
        assert_eq!(off.personal_channel("alice"), None);
        // Whatever the access levels of its namespace, short of `none`, a user's own
        // personal channel is theirs.
        let strict = config("[channels.default]\nsubscribe = \"granted\"");
        let alice = user("alice", &[]);
        assert!(strict.authorize(&mine, Action::Subscribe, &alice).is_ok());
        assert!(
            strict
                .authorize("user:#bob", Action::Subscribe, &alice)
                .is_err()
        );
        assert!(
            strict
                .authorize("other:#alice", Action::Subscribe, &alice)
                .is_err()
        );
    }
}
