//! Calling the gateways' control services (`proto/herald/control/v1/control.proto`): each
//! gateway the heartbeats list, at the address it announces, concurrently and each within
//! `control.timeout`. A gateway that does not answer is reported by name; the others are
//! still reached.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::join_all;
use herald_core::call_key::{AddKey, InvalidKey};
use herald_core::config::ControlConfig;
use herald_core::control::{self, CONTROL_KEY, NODE_METADATA, TlsFileError};
use herald_core::metrics::CONTROL_CALLS;
use herald_proto::api::v1::NodeFailure;
use herald_proto::bus::v1::NodeStatus;
use herald_proto::control::v1::gateway_control_client::GatewayControlClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status};

use super::nodes::Nodes;

/// A gateway's control service, with the control key and the gateway's id on every call.
pub type Client = GatewayControlClient<InterceptedService<Channel, Addressed>>;

/// Most bytes of one gateway's answer: a `Channels` of a gateway with a channel per user
/// can pass tonic's default of 4 MiB.
const MAX_ANSWER: usize = 64 << 20;
/// How often an idle connection to a gateway is checked, so that one a partition broke is
/// noticed before the next command needs it.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// Why the gateways cannot be called with these settings.
#[derive(Debug, thiserror::Error)]
pub enum ControlSetupError {
    #[error(transparent)]
    TlsFile(#[from] TlsFileError),
    #[error(transparent)]
    Key(#[from] InvalidKey),
    #[error("control.tls_*: {0}")]
    Tls(tonic::transport::Error),
}

/// Adds the control key, and the id of the gateway the call is for: a gateway refuses a
/// call for another (an address a dead gateway announced may belong to a new one).
#[derive(Clone)]
pub struct Addressed {
    key: AddKey,
    node: MetadataValue<Ascii>,
}

impl Interceptor for Addressed {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let mut request = self.key.call(request)?;
        request
            .metadata_mut()
            .insert(NODE_METADATA, self.node.clone());
        Ok(request)
    }
}

/// What a command to every gateway came to: each answer with the gateway's id, and the
/// gateways that did not answer.
pub struct Reached<T> {
    pub answers: Vec<(String, T)>,
    pub failures: Vec<NodeFailure>,
}

pub struct Gateways {
    nodes: Arc<Nodes>,
    tls: Option<ClientTlsConfig>,
    key: AddKey,
    /// Longest wait for one gateway's answer.
    timeout: Duration,
    /// One connection per gateway address, made on first use and kept while the
    /// gateway is listed.
    channels: Mutex<HashMap<String, Channel>>,
}

impl Gateways {
    pub fn new(config: &ControlConfig, nodes: Arc<Nodes>) -> Result<Self, ControlSetupError> {
        let tls = control::client_tls(config)?;
        if let Some(tls) = &tls {
            // The certificates are parsed here, so that bad ones stop the node at start
            // rather than fail every call.
            Endpoint::from_static("https://127.0.0.1")
                .tls_config(tls.clone())
                .map_err(ControlSetupError::Tls)?;
        }
        Ok(Self {
            nodes,
            tls,
            key: AddKey::new(CONTROL_KEY, &config.key)?,
            timeout: config.timeout,
            channels: Mutex::default(),
        })
    }

    pub fn nodes(&self) -> &Nodes {
        &self.nodes
    }

    fn channels(&self) -> MutexGuard<'_, HashMap<String, Channel>> {
        // Every step leaves the map consistent, so a poisoned lock is still sound.
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The control service of `gateway`, at the address it announces.
    fn client(&self, gateway: &NodeStatus) -> Result<Client, Status> {
        let address = &gateway.control;
        let known = self.channels().get(address).cloned();
        let channel = match known {
            Some(channel) => channel,
            None => {
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
                    .map_err(|e| {
                        Status::failed_precondition(format!("announces a bad address: {e}"))
                    })?
                    .connect_timeout(self.timeout)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(KEEPALIVE)
                    .keep_alive_timeout(self.timeout)
                    .keep_alive_while_idle(true);
                if let Some(tls) = &self.tls {
                    // Parsed once already, in `new`.
                    endpoint = endpoint
                        .tls_config(tls.clone())
                        .map_err(|e| Status::internal(format!("control TLS: {e}")))?;
                }
                let channel = endpoint.connect_lazy();
                self.channels().insert(address.clone(), channel.clone());
                channel
            }
        };
        let node = gateway.id.parse().map_err(|_| {
            Status::failed_precondition("its id cannot travel as gRPC metadata (not ASCII)")
        })?;
        let addressed = Addressed {
            key: self.key.clone(),
            node,
        };
        Ok(GatewayControlClient::with_interceptor(channel, addressed)
            .max_decoding_message_size(MAX_ANSWER))
    }

    /// Calls `call` on `gateway`'s control service, within the timeout.
    async fn call<T, F, Fut>(&self, gateway: &NodeStatus, call: &F) -> Result<T, Status>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        if gateway.control.is_empty() {
            return Err(Status::unimplemented(
                "its heartbeat announces no control service (a release before 0.1?)",
            ));
        }
        let client = self.client(gateway)?;
        let answer = match tokio::time::timeout(self.timeout, call(client)).await {
            Ok(answer) => answer.map(Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        };
        let outcome = match &answer {
            Ok(_) => "ok",
            Err(status) if status.code() == tonic::Code::DeadlineExceeded => "timeout",
            Err(status) if broken(status) => "unavailable",
            Err(_) => "refused",
        };
        metrics::counter!(CONTROL_CALLS, "outcome" => outcome).increment(1);
        if let Err(status) = &answer
            && broken(status)
        {
            // The next call starts on a new connection rather than wait on a broken one.
            self.channels().remove(&gateway.control);
        }
        answer
    }

    /// The gateways (and standalone nodes) the heartbeats list, by id.
    pub fn listed(&self) -> Vec<NodeStatus> {
        let listed: Vec<NodeStatus> = self
            .nodes
            .live()
            .into_iter()
            .map(|(status, _)| status)
            .filter(has_clients)
            .collect();
        // Connections of gateways no longer listed go.
        self.channels()
            .retain(|address, _| listed.iter().any(|g| g.control == *address));
        listed
    }

    /// Calls `call` on each of `gateways` (from [`Self::listed`]) at once.
    pub async fn all<T, F, Fut>(&self, gateways: Vec<NodeStatus>, call: F) -> Reached<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let calls = gateways.iter().map(|gateway| self.call(gateway, &call));
        let mut reached = Reached {
            answers: Vec::new(),
            failures: Vec::new(),
        };
        for (gateway, outcome) in gateways.iter().zip(join_all(calls).await) {
            match outcome {
                Ok(answer) => reached.answers.push((gateway.id.clone(), answer)),
                Err(status) => {
                    tracing::warn!(node = %gateway.id, address = %gateway.control,
                        error = %status.message(), "a gateway did not answer a control call");
                    reached.failures.push(failure(gateway, &status));
                }
            }
        }
        reached
    }

    /// Calls `call` on the gateway `node`: NOT_FOUND when no heartbeat names it,
    /// FAILED_PRECONDITION for a router or a gateway that refuses the call (another
    /// control key, an address now another gateway's), UNAVAILABLE when it does not
    /// answer.
    pub async fn one<T, F, Fut>(&self, node: &str, call: F) -> Result<(NodeStatus, T), Status>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let Some((gateway, _)) = self.nodes.live().into_iter().find(|(s, _)| s.id == node) else {
            return Err(Status::not_found(format!(
                "no node {node:?} has sent a heartbeat lately (`heraldctl node list` lists them)"
            )));
        };
        if !has_clients(&gateway) {
            return Err(Status::failed_precondition(format!(
                "{node} is a {}: only gateways and standalone nodes have a control service",
                gateway.kind
            )));
        }
        match self.call(&gateway, &call).await {
            Ok(answer) => Ok((gateway, answer)),
            Err(status) if status.code() == tonic::Code::InvalidArgument => Err(status),
            Err(status) => {
                let why = format!("{node} at {}: {}", gateway.control, describe(&status));
                Err(match broken(&status) {
                    true => Status::unavailable(why),
                    false => Status::failed_precondition(why),
                })
            }
        }
    }
}

/// Whether a call failed for want of a working connection (rather than with an answer
/// of the gateway's): no answer in time, or a transport error, whatever its code.
fn broken(status: &Status) -> bool {
    let transport =
        std::error::Error::source(status).is_some_and(|e| e.is::<tonic::transport::Error>());
    transport
        || matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
        )
}

/// Gateways and standalone nodes hold clients; routers do not.
fn has_clients(status: &NodeStatus) -> bool {
    status.kind != "router"
}

fn failure(gateway: &NodeStatus, status: &Status) -> NodeFailure {
    NodeFailure {
        node: gateway.id.clone(),
        address: gateway.control.clone(),
        error: describe(status),
    }
}

/// A failed call as an operator reads it: what kind of failure, and why.
fn describe(status: &Status) -> String {
    let code = match status.code() {
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::DeadlineExceeded => "timed out",
        tonic::Code::Unauthenticated => "refused the control key",
        tonic::Code::Unimplemented => "no control service",
        tonic::Code::FailedPrecondition => "refused",
        _ => "failed",
    };
    format!("{code}: {}", status.message())
}
