//! Configuration of the hooks: which calls gateways make to the app's backend
//! (`proto/herald/backend/v1/backend.proto`, `docs/backend.md`), where, how long they may
//! take, how many may be under way, and what happens when one fails.
//!
//! `connect`, `refresh` and `rpc` are about a connection; `subscribe` and `publish` are set
//! per channel namespace, with `[hooks.default]` for namespaces without an entry. Each
//! hook of each namespace has its own bound on calls in flight, so a slow backend of one
//! namespace never holds up another's.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::channel;
use crate::redact::hidden;

/// Most calls of one hook in flight on a gateway that `max_in_flight` may allow.
pub const MAX_IN_FLIGHT: usize = 65_536;

/// What a gateway does when a hook's call fails (unreachable, an error status, no answer
/// within the timeout, too many calls in flight).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// The client's request is refused with 111 (temporary: it may retry).
    #[default]
    Refuse,
    /// The request goes on as if the hook were not configured.
    Allow,
}

/// One hook: a backend endpoint and how to call it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HookConfig {
    /// `grpc://host:port` (the `HeraldBackend` gRPC service) or `http://host:port/path`
    /// (JSON posted to `<path>/<hook>`). Empty: the hook is off.
    pub url: String,
    /// Longest wait for the backend's answer.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// What happens when a call fails.
    pub on_failure: OnFailure,
    /// Most calls of this hook under way at once on one gateway; a call past it is
    /// refused at once with 111, whatever `on_failure` says.
    pub max_in_flight: usize,
    /// `connect` only: call it for every connection, also one that sent a token (the token
    /// is then passed along, unverified); otherwise only connections without one.
    pub always: bool,
}

impl Default for HookConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            timeout: Duration::from_secs(1),
            on_failure: OnFailure::Refuse,
            max_in_flight: 1024,
            always: false,
        }
    }
}

impl HookConfig {
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    fn validate(&self, name: &str, connect: bool) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        if !(self.url.starts_with("grpc://") || self.url.starts_with("http://")) {
            return Err(format!(
                "{name}.url {:?} must start with grpc:// or http:// (for TLS to the backend, \
                 put a sidecar or service mesh in between)",
                self.url
            ));
        }
        if self.timeout.is_zero() {
            return Err(format!("{name}.timeout must be more than zero"));
        }
        if self.max_in_flight == 0 || self.max_in_flight > MAX_IN_FLIGHT {
            return Err(format!(
                "{name}.max_in_flight must be from 1 to {MAX_IN_FLIGHT}"
            ));
        }
        if self.always && !connect {
            return Err(format!("{name}.always is a setting of hooks.connect only"));
        }
        Ok(())
    }
}

/// The hooks of a channel namespace. Unset ones are `[hooks.default]`'s.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceHooks {
    /// Before a subscription (a Socket.IO `join`, or a namespace connect) is accepted.
    pub subscribe: Option<HookConfig>,
    /// Before a publication (a Socket.IO event) is accepted.
    pub publish: Option<HookConfig>,
}

/// Which hook of a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelHook {
    Subscribe,
    Publish,
}

impl ChannelHook {
    pub fn label(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe",
            Self::Publish => "publish",
        }
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    /// Headers of the HTTP request that opened a connection passed to `connect` (lower
    /// case): what a backend needs to recognise a session.
    pub headers: Vec<String>,
    /// Sent to the backend with every call (gRPC metadata and HTTP header
    /// `x-herald-key`), so that it can tell Herald's calls from others. Prefer
    /// `HERALD_HOOKS__KEY` to writing it in a file.
    pub key: String,
    /// Admits clients: a user id, `info`, grants and an expiry for the connection.
    pub connect: HookConfig,
    /// Extends the admission of a connection that `connect` admitted, before it ends.
    pub refresh: HookConfig,
    /// Answers clients' `rpc` calls (native `rpc`, Socket.IO `herald:rpc`).
    pub rpc: HookConfig,
    /// Hooks of namespaces without an entry in `namespaces`.
    pub default: NamespaceHooks,
    /// Hooks by channel namespace (the part of a channel's name before the first `:`; a
    /// Socket.IO namespace `/chat` and its rooms are namespace `/chat`).
    pub namespaces: BTreeMap<String, NamespaceHooks>,
}

impl std::fmt::Debug for HooksConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HooksConfig")
            .field("headers", &self.headers)
            .field("key", &hidden(&self.key))
            .field("connect", &self.connect)
            .field("refresh", &self.refresh)
            .field("rpc", &self.rpc)
            .field("default", &self.default)
            .field("namespaces", &self.namespaces)
            .finish()
    }
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            headers: [
                "cookie",
                "authorization",
                "origin",
                "user-agent",
                "x-forwarded-for",
            ]
            .map(String::from)
            .to_vec(),
            key: String::new(),
            connect: HookConfig::default(),
            refresh: HookConfig::default(),
            rpc: HookConfig::default(),
            default: NamespaceHooks::default(),
            namespaces: BTreeMap::new(),
        }
    }
}

impl HooksConfig {
    /// The `hook` of channels of `namespace`, if it is on.
    pub fn for_namespace(&self, namespace: &str, hook: ChannelHook) -> Option<&HookConfig> {
        fn pick(hooks: &NamespaceHooks, hook: ChannelHook) -> Option<&HookConfig> {
            match hook {
                ChannelHook::Subscribe => hooks.subscribe.as_ref(),
                ChannelHook::Publish => hooks.publish.as_ref(),
            }
        }
        let chosen = match self.namespaces.get(namespace) {
            Some(hooks) => pick(hooks, hook).or_else(|| pick(&self.default, hook)),
            None => pick(&self.default, hook),
        };
        chosen.filter(|config| config.enabled())
    }

    /// The `hook` of `channel`, if it is on.
    pub fn for_channel(&self, channel: &str, hook: ChannelHook) -> Option<&HookConfig> {
        self.for_namespace(channel::namespace(channel), hook)
    }

    /// Whether any hook is on.
    pub fn any(&self) -> bool {
        let namespaces = std::iter::once(&self.default).chain(self.namespaces.values());
        self.connect.enabled()
            || self.rpc.enabled()
            || namespaces
                .flat_map(|hooks| [&hooks.subscribe, &hooks.publish])
                .any(|hook| hook.as_ref().is_some_and(HookConfig::enabled))
    }

    pub fn validate(&self) -> Result<(), String> {
        self.connect.validate("hooks.connect", true)?;
        self.refresh.validate("hooks.refresh", false)?;
        self.rpc.validate("hooks.rpc", false)?;
        if self.refresh.enabled() && !self.connect.enabled() {
            return Err(
                "hooks.refresh extends admissions of hooks.connect, which is off: set \
                 hooks.connect.url too, or leave hooks.refresh out (tokens are refreshed by \
                 their clients)"
                    .into(),
            );
        }
        let named = self
            .namespaces
            .iter()
            .map(|(name, hooks)| (name.as_str(), hooks));
        for (name, hooks) in std::iter::once(("default", &self.default)).chain(named) {
            for (hook, config) in [("subscribe", &hooks.subscribe), ("publish", &hooks.publish)] {
                if let Some(config) = config {
                    config.validate(&format!("hooks.{name}.{hook}"), false)?;
                }
            }
        }
        if !self.key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("hooks.key must be printable ASCII without spaces".into());
        }
        if let Some(header) = self.headers.iter().find(|h| h.to_lowercase() != **h) {
            return Err(format!("hooks.headers: {header:?} must be lower case"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(url: &str) -> Option<HookConfig> {
        Some(HookConfig {
            url: url.into(),
            ..HookConfig::default()
        })
    }

    #[test]
    fn a_namespace_entry_overrides_the_default_hook_by_hook() {
        let mut config = HooksConfig::default();
        config.default.publish = hook("grpc://default:1");
        config.default.subscribe = hook("grpc://default:1");
        config.namespaces.insert(
            "chat".into(),
            NamespaceHooks {
                publish: hook("http://chat:2/hooks"),
                subscribe: None,
            },
        );
        config.namespaces.insert(
            "open".into(),
            NamespaceHooks {
                publish: hook(""),
                subscribe: None,
            },
        );
        let url = |channel: &str, which| config.for_channel(channel, which).map(|h| &*h.url);
        assert_eq!(
            url("chat:1", ChannelHook::Publish),
            Some("http://chat:2/hooks")
        );
        assert_eq!(
            url("chat:1", ChannelHook::Subscribe),
            Some("grpc://default:1")
        );
        assert_eq!(url("news", ChannelHook::Publish), Some("grpc://default:1"));
        // An empty url turns the default off for that namespace.
        assert_eq!(url("open:x", ChannelHook::Publish), None);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn refuses_what_cannot_work() {
        let config = HooksConfig {
            rpc: hook("https://backend").unwrap_or_default(),
            ..HooksConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .contains("grpc:// or http://")
        );

        let config = HooksConfig {
            refresh: hook("grpc://backend:1").unwrap_or_default(),
            ..HooksConfig::default()
        };
        assert!(config.validate().unwrap_err().contains("hooks.refresh"));

        let mut config = HooksConfig::default();
        config.default.publish = Some(HookConfig {
            always: true,
            ..hook("grpc://backend:1").unwrap_or_default()
        });
        assert!(config.validate().unwrap_err().contains("always"));

        let mut config = HooksConfig::default();
        config.default.subscribe = Some(HookConfig {
            max_in_flight: 0,
            ..hook("grpc://backend:1").unwrap_or_default()
        });
        assert!(config.validate().unwrap_err().contains("max_in_flight"));
    }
}
