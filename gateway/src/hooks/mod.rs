//! The hooks: calls a gateway makes to the app's backend before it admits a client, a
//! subscription or a publication, and the RPCs clients make to it (`docs/backend.md`).
//!
//! Every hook of every configured namespace is a [`Hook`] with its own timeout, failure
//! policy and bound on calls in flight: a call past the bound fails at once instead of
//! waiting, so a slow backend costs its own namespace's clients their answers and nothing
//! else. A session waits only for its own calls; other connections go on.
//!
//! A call has three ends: the backend answers (admit, allow, change), the backend refuses
//! (the client sees its code and message), or the call fails, and `on_failure` says
//! whether the client is refused with 111 or goes on as if there were no hook.

mod backend;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_core::auth::{Identity, MAX_INFO_BYTES};
use herald_core::codes::{ErrorCode, Refusal};
use herald_core::config::ChannelRules;
use herald_core::config::ConfigError;
use herald_core::envelope;
use herald_core::hooks::{ChannelHook, HookConfig, HooksConfig, NamespaceHooks, OnFailure};
use herald_core::metrics::{HOOK_CALLS, HOOK_DURATION};
use herald_core::publish::{self, Limit, Prepared};
use herald_proto::backend::v1::{
    Client, ConnectRequest, Error as BackendError, PublishRequest, RefreshRequest, RpcRequest,
    SubscribeRequest,
};
use herald_proto::bus::v1::ClientInfo;
use metrics::{Counter, Histogram, counter, histogram};
use serde_json::value::RawValue;
use tokio::sync::Semaphore;

pub use backend::{Backend, Call, CallError, MAX_REPLY_BYTES};

/// Longest method name of an RPC.
pub const MAX_METHOD_LEN: usize = 256;

/// How long before its end a connection admitted by the connect hook is refreshed.
const RENEW_LEAD: Duration = Duration::from_secs(10);

/// How long a failed refresh with `on_failure = "allow"` keeps the connection before the
/// next try.
const RENEW_RETRY: Duration = Duration::from_secs(60);

/// What the HTTP request that opened a connection says, for the connect hook: the headers
/// `hooks.headers` names.
#[derive(Debug, Clone, Default)]
pub struct Handshake {
    pub headers: HashMap<String, String>,
}

/// A client asking to be admitted.
pub struct Attempt<'a> {
    /// Its connection (or socket) id.
    pub client: &'a str,
    /// `native` or `socketio`.
    pub transport: &'static str,
    /// Its Socket.IO namespace; empty for native clients.
    pub namespace: &'a str,
    pub token: Option<&'a str>,
    /// What it sent besides, JSON: the native `connect`'s `data`, the CONNECT `auth`.
    pub data: Option<&'a str>,
    pub handshake: &'a Handshake,
}

/// What the refresh hook decided about a connection nearing its end.
pub enum Renewal {
    /// Extended until `expires_at` (Unix seconds; `None`: for good), with new `info`.
    Until {
        expires_at: Option<u64>,
        info: Option<String>,
    },
    /// Not extended: the connection ends at its expiry.
    Ended,
    /// The call failed and the policy lets the connection go on: try again later.
    Retry(Duration),
}

/// One hook of one scope: where it calls, and how.
struct Hook {
    /// `connect`, `refresh`, `subscribe`, `publish` or `rpc`.
    name: &'static str,
    /// The namespace entry it belongs to (`default`), or `connection`.
    scope: String,
    backend: Backend,
    timeout: Duration,
    on_failure: OnFailure,
    /// Calls that may still start.
    permits: Semaphore,
    meters: Meters,
}

/// The series of one hook.
struct Meters {
    duration: Histogram,
    ok: Counter,
    refused: Counter,
    failed: Counter,
}

impl Meters {
    /// The hook's series, at zero.
    fn new(hook: &'static str, scope: &str) -> Self {
        let result = |result: &'static str| {
            let counter = counter!(
                HOOK_CALLS, "hook" => hook, "namespace" => scope.to_string(), "result" => result
            );
            counter.absolute(0);
            counter
        };
        Self {
            duration: histogram!(HOOK_DURATION, "hook" => hook, "namespace" => scope.to_string()),
            ok: result("ok"),
            refused: result("refused"),
            failed: result("failed"),
        }
    }
}

/// A reply that may carry the backend's refusal.
pub trait Answer {
    fn refusal(&self) -> Option<&BackendError>;
}

macro_rules! answers {
    ($($reply:ty),*) => {$(
        impl Answer for $reply {
            fn refusal(&self) -> Option<&BackendError> {
                self.error.as_ref()
            }
        }
    )*};
}

answers!(
    herald_proto::backend::v1::ConnectReply,
    herald_proto::backend::v1::RefreshReply,
    herald_proto::backend::v1::SubscribeReply,
    herald_proto::backend::v1::PublishReply,
    herald_proto::backend::v1::RpcReply
);

impl Hook {
    fn new(
        name: &'static str,
        scope: &str,
        config: &HookConfig,
        backends: &mut HashMap<String, Backend>,
    ) -> Result<Option<Arc<Self>>, ConfigError> {
        if !config.enabled() {
            return Ok(None);
        }
        let backend = match backends.get(&config.url) {
            Some(backend) => backend.clone(),
            None => {
                let backend = Backend::new(&config.url).map_err(ConfigError::Invalid)?;
                backends.insert(config.url.clone(), backend.clone());
                backend
            }
        };
        Ok(Some(Arc::new(Self {
            name,
            scope: scope.to_string(),
            backend,
            timeout: config.timeout,
            on_failure: config.on_failure,
            permits: Semaphore::new(config.max_in_flight),
            meters: Meters::new(name, scope),
        })))
    }

    /// Calls the hook. `Ok(Some(reply))`: the backend allowed (its reply says how);
    /// `Ok(None)`: the call failed and the policy lets the request go on; `Err`: the
    /// backend refused (`refused` gives the code of a refusal without one), or the call
    /// failed and the policy refuses.
    async fn call<C>(
        &self,
        request: C,
        key: &str,
        refused: ErrorCode,
    ) -> Result<Option<C::Reply>, Refusal>
    where
        C: Call,
        C::Reply: Answer,
    {
        let started = Instant::now();
        let outcome = match self.permits.try_acquire() {
            // Shedding load, not a backend failure: never a way past the hook, whatever
            // `on_failure` says.
            Err(_) => {
                self.meters.failed.increment(1);
                return Err(Refusal::new(
                    ErrorCode::Unavailable,
                    format!(
                        "the {} hook has too many calls in flight (max_in_flight)",
                        self.name
                    ),
                ));
            }
            Ok(_permit) => {
                match tokio::time::timeout(self.timeout, self.backend.call(request, key)).await {
                    Ok(Ok(reply)) => Ok(reply),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err(format!("no answer within {:?}", self.timeout)),
                }
            }
        };
        let meters = &self.meters;
        meters.duration.record(started.elapsed().as_secs_f64());
        match &outcome {
            Ok(reply) if reply.refusal().is_some() => meters.refused.increment(1),
            Ok(_) => meters.ok.increment(1),
            Err(_) => meters.failed.increment(1),
        }
        match outcome {
            Ok(reply) => match reply.refusal() {
                Some(error) => Err(backend_refusal(error, refused)),
                None => Ok(Some(reply)),
            },
            Err(why) => {
                // The details (addresses, the backend's own errors) are for the logs only.
                tracing::warn!(hook = self.name, scope = %self.scope, %why, "hook call failed");
                match self.on_failure {
                    OnFailure::Allow => Ok(None),
                    OnFailure::Refuse => Err(Refusal::new(
                        ErrorCode::Unavailable,
                        format!("the backend did not answer (the {} hook)", self.name),
                    )),
                }
            }
        }
    }
}

/// The backend's refusal as the client sees it: its code when it is Herald's or the
/// app's (1000–1999), `default` otherwise (a refusal stays one: never a temporary error).
fn backend_refusal(error: &BackendError, default: ErrorCode) -> Refusal {
    let code = ErrorCode::from_code(error.code).unwrap_or(default);
    let message = match error.message.is_empty() {
        true => "refused by the backend".to_string(),
        false => error.message.clone(),
    };
    Refusal::new(code, message)
}

/// The hooks of one namespace entry.
#[derive(Clone, Default)]
struct Scoped {
    subscribe: Option<Arc<Hook>>,
    publish: Option<Arc<Hook>>,
}

impl Scoped {
    fn new(
        scope: &str,
        hooks: &NamespaceHooks,
        base: &Scoped,
        backends: &mut HashMap<String, Backend>,
    ) -> Result<Self, ConfigError> {
        let mut own =
            |name, config: &Option<HookConfig>, inherited: &Option<Arc<Hook>>| match config {
                Some(config) => Hook::new(name, scope, config, backends),
                None => Ok(inherited.clone()),
            };
        Ok(Self {
            subscribe: own("subscribe", &hooks.subscribe, &base.subscribe)?,
            publish: own("publish", &hooks.publish, &base.publish)?,
        })
    }

    fn get(&self, hook: ChannelHook) -> Option<&Hook> {
        match hook {
            ChannelHook::Subscribe => self.subscribe.as_deref(),
            ChannelHook::Publish => self.publish.as_deref(),
        }
    }
}

/// Every hook of a gateway.
#[derive(Default)]
pub struct Hooks {
    key: String,
    headers: Vec<String>,
    connect: Option<Arc<Hook>>,
    connect_always: bool,
    refresh: Option<Arc<Hook>>,
    rpc: Option<Arc<Hook>>,
    default: Scoped,
    namespaces: HashMap<String, Scoped>,
}

/// Who a hook is about, as the backend sees it.
pub fn client(info: &ClientInfo, transport: &str, namespace: &str) -> Client {
    Client {
        client: info.client.clone(),
        user: info.user.clone(),
        info: String::from_utf8_lossy(&info.info).into_owned(),
        transport: transport.to_string(),
        namespace: namespace.to_string(),
    }
}

impl Hooks {
    /// The hooks of `config`; backends are not contacted until the first call.
    pub fn new(config: &HooksConfig) -> Result<Self, ConfigError> {
        let mut backends = HashMap::new();
        let connection = |name, config: &HookConfig, backends: &mut _| {
            Hook::new(name, "connection", config, backends)
        };
        let default = Scoped::new(
            "default",
            &config.default,
            &Scoped::default(),
            &mut backends,
        )?;
        let mut namespaces = HashMap::new();
        for (name, hooks) in &config.namespaces {
            let scoped = Scoped::new(name, hooks, &default, &mut backends)?;
            namespaces.insert(name.clone(), scoped);
        }
        Ok(Self {
            key: config.key.clone(),
            headers: config.headers.clone(),
            connect: connection("connect", &config.connect, &mut backends)?,
            connect_always: config.connect.always,
            refresh: connection("refresh", &config.refresh, &mut backends)?,
            rpc: connection("rpc", &config.rpc, &mut backends)?,
            default,
            namespaces,
        })
    }

    /// The headers of a connection's opening request that the connect hook wants, or none
    /// when there is no connect hook.
    pub fn handshake<'a>(&self, header: impl Fn(&str) -> Option<&'a str>) -> Handshake {
        if self.connect.is_none() {
            return Handshake::default();
        }
        let headers = self
            .headers
            .iter()
            .filter_map(|name| Some((name.clone(), header(name)?.to_string())))
            .collect();
        Handshake { headers }
    }

    fn channel_hook(&self, channel: &str, hook: ChannelHook) -> Option<&Hook> {
        let namespace = herald_core::channel::namespace(channel);
        self.namespaces
            .get(namespace)
            .unwrap_or(&self.default)
            .get(hook)
    }

    /// Whether publishes on `channel` go through the publish hook.
    pub fn publish_applies(&self, channel: &str) -> bool {
        self.channel_hook(channel, ChannelHook::Publish).is_some()
    }

    /// Whether connections the connect hook admits are refreshed through it.
    pub fn renews(&self) -> bool {
        self.refresh.is_some()
    }

    /// Asks the connect hook about `attempt`: `Ok(Some)` admits it as the backend says,
    /// `Ok(None)` leaves it to its token (no hook for it, or the call failed and the policy
    /// allows), `Err` refuses it.
    pub async fn connect(&self, attempt: &Attempt<'_>) -> Result<Option<Identity>, Refusal> {
        let Some(hook) = &self.connect else {
            return Ok(None);
        };
        if attempt.token.is_some() && !self.connect_always {
            return Ok(None);
        }
        let request = ConnectRequest {
            client: Some(Client {
                client: attempt.client.to_string(),
                transport: attempt.transport.to_string(),
                namespace: attempt.namespace.to_string(),
                ..Client::default()
            }),
            headers: attempt.handshake.headers.clone(),
            data: attempt.data.unwrap_or_default().to_string(),
            token: attempt.token.unwrap_or_default().to_string(),
        };
        let Some(reply) = hook
            .call(request, &self.key, ErrorCode::Unauthorized)
            .await?
        else {
            return Ok(None);
        };
        let info = checked_info(reply.info, "connect")?;
        Ok(Some(Identity {
            user: reply.user,
            info,
            grants: reply.channels,
            expires_at: (reply.expire_at > 0).then_some(reply.expire_at),
        }))
    }

    /// Asks the refresh hook to extend the admission of `client`.
    pub async fn refresh(&self, client: Client) -> Renewal {
        let Some(hook) = &self.refresh else {
            return Renewal::Ended;
        };
        let request = RefreshRequest {
            client: Some(client),
        };
        match hook.call(request, &self.key, ErrorCode::Unauthorized).await {
            Ok(Some(reply)) if !reply.expired => match checked_info(reply.info, "refresh") {
                Ok(info) => Renewal::Until {
                    expires_at: (reply.expire_at > 0).then_some(reply.expire_at),
                    info,
                },
                Err(_) => Renewal::Ended,
            },
            Ok(Some(_)) | Err(_) => Renewal::Ended,
            Ok(None) => Renewal::Retry(RENEW_RETRY),
        }
    }

    /// Asks the subscribe hook of `channel`, if it has one, about `client` subscribing.
    /// Returns the `info` the client has in the channel's presence, when the backend gives
    /// one.
    pub async fn subscribe(
        &self,
        channel: &str,
        client: impl FnOnce() -> Client,
    ) -> Result<Option<String>, Refusal> {
        let Some(hook) = self.channel_hook(channel, ChannelHook::Subscribe) else {
            return Ok(None);
        };
        let request = SubscribeRequest {
            client: Some(client()),
            channel: channel.to_string(),
        };
        match hook
            .call(request, &self.key, ErrorCode::PermissionDenied)
            .await?
        {
            Some(reply) => checked_info(reply.info, "subscribe"),
            None => Ok(None),
        }
    }

    /// Asks the publish hook of the publication's channel, if it has one, about a checked
    /// publish of a client of `transport` (and Socket.IO `namespace`). The backend may
    /// refuse it, or replace its data (checked again against `limit`), or keep it out of
    /// history (not on a sync document's channel, whose patches are its history).
    pub async fn publish(
        &self,
        prepared: Prepared,
        transport: &str,
        namespace: &str,
        limit: Limit,
        bus_limit: usize,
        rules: &ChannelRules,
    ) -> Result<Prepared, Refusal> {
        let Some(hook) = self.channel_hook(prepared.channel(), ChannelHook::Publish) else {
            return Ok(prepared);
        };
        let history = rules.has_history();
        let prepare = |publish, history| publish::prepare(publish, limit, bus_limit, history);
        let mut publish = prepared.into_publish();
        let publisher = publish.publisher.clone().unwrap_or_default();
        let request = PublishRequest {
            client: Some(client(&publisher, transport, namespace)),
            channel: publish.channel.clone(),
            data: String::from_utf8_lossy(&publish.data).into_owned(),
            attachments: publish.attachments.clone(),
        };
        let reply = hook
            .call(request, &self.key, ErrorCode::PermissionDenied)
            .await?;
        let Some(reply) = reply else {
            return prepare(publish, history);
        };
        if let Some(data) = reply.data {
            let invalid = |why: String| {
                tracing::warn!(channel = %publish.channel, %why, "publish hook's data refused");
                Refusal::new(
                    ErrorCode::Internal,
                    format!("the publish hook's data {why}"),
                )
            };
            serde_json::from_str::<&RawValue>(&data)
                .map_err(|e| invalid(format!("is not JSON: {e}")))?;
            envelope::check_event_name(&data).map_err(|r| invalid(r.message))?;
            envelope::check_attachments(&data, publish.attachments.len())
                .map_err(|r| invalid(r.message))?;
            publish.data = Bytes::from(data);
        }
        // A sync document's patches are its history: none is ever left out.
        let kept = !reply.skip_history || rules.sync;
        prepare(publish, history && kept)
    }

    /// Whether clients may make RPCs.
    pub fn rpc_enabled(&self) -> bool {
        self.rpc.is_some()
    }

    /// Calls `method` of the backend for `client`; the answer is JSON text.
    pub async fn rpc(&self, client: Client, method: &str, data: &str) -> Result<String, Refusal> {
        let Some(hook) = &self.rpc else {
            return Err(Refusal::new(
                ErrorCode::NotAvailable,
                "no backend answers rpc calls here (hooks.rpc)",
            ));
        };
        if method.is_empty() || method.len() > MAX_METHOD_LEN {
            let message = format!("method must be 1 to {MAX_METHOD_LEN} bytes");
            return Err(Refusal::new(ErrorCode::BadRequest, message));
        }
        let request = RpcRequest {
            client: Some(client),
            method: method.to_string(),
            data: data.to_string(),
        };
        match hook
            .call(request, &self.key, ErrorCode::PermissionDenied)
            .await?
        {
            Some(reply) if reply.data.is_empty() => Ok("null".into()),
            Some(reply) => {
                serde_json::from_str::<&RawValue>(&reply.data).map_err(|e| {
                    Refusal::new(
                        ErrorCode::Internal,
                        format!("the rpc hook's data is not JSON: {e}"),
                    )
                })?;
                Ok(reply.data)
            }
            None => Err(Refusal::new(
                ErrorCode::Unavailable,
                "the rpc hook failed and has no answer to let through",
            )),
        }
    }
}

/// When a connection admitted by the connect hook should be refreshed: shortly before
/// `expires`.
pub fn renewal_time(expires: tokio::time::Instant) -> tokio::time::Instant {
    expires
        .checked_sub(RENEW_LEAD)
        .unwrap_or(expires)
        .max(tokio::time::Instant::now())
}

/// The backend's `info`: JSON of at most [`MAX_INFO_BYTES`], or none when empty.
fn checked_info(info: String, hook: &str) -> Result<Option<String>, Refusal> {
    if info.is_empty() {
        return Ok(None);
    }
    let valid = info.len() <= MAX_INFO_BYTES && serde_json::from_str::<&RawValue>(&info).is_ok();
    if !valid {
        tracing::warn!(
            hook,
            "the backend's info is not JSON of at most {MAX_INFO_BYTES} bytes"
        );
        return Err(Refusal::new(
            ErrorCode::Internal,
            format!("the {hook} hook's info is not JSON of at most {MAX_INFO_BYTES} bytes"),
        ));
    }
    Ok(Some(info))
}
