//! The commands and flags of `heraldctl`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "heraldctl",
    version,
    about = "Drive a Herald cluster through its gRPC server API (docs/server-api.md)"
)]
pub struct Cli {
    #[command(flatten)]
    pub connection: Connection,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Connection {
    /// The server API of a router or standalone node.
    #[arg(
        long,
        global = true,
        env = "HERALDCTL_URL",
        default_value = "http://127.0.0.1:3200"
    )]
    pub url: String,
    /// The API key, when the cluster requires one (api.key).
    #[arg(long, global = true, env = "HERALDCTL_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// For an `https://` URL: the PEM certificate of the CA that signed the API's
    /// certificate (or the certificate itself, when self-signed).
    #[arg(long, global = true, env = "HERALDCTL_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish a JSON document on a channel.
    Publish {
        channel: String,
        /// The payload, a JSON document (`'{"text":"hi"}'`, `'"hi"'`, `42`).
        data: String,
        /// Stored once however often it is retried.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Publish one JSON document on many channels.
    Broadcast {
        /// The payload, a JSON document.
        data: String,
        #[arg(required = true)]
        channels: Vec<String>,
        /// A retry with the same key is stored once on each channel with history.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Read a channel's history.
    History {
        channel: String,
        /// At most this many publications.
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// Only those after this offset (before it, with --reverse).
        #[arg(long)]
        since: Option<u64>,
        /// Newest first.
        #[arg(long)]
        reverse: bool,
    },
    /// Who is subscribed to a channel with presence.
    Presence { channel: String },
    /// How many clients and users are subscribed to a channel with presence.
    PresenceStats { channel: String },
    /// The channels with subscribers, cluster-wide.
    Channels {
        /// A glob: `chat:*`, `user:#?*`. Every channel when left out.
        pattern: Option<String>,
    },
    /// The nodes of the cluster (as `node list`).
    Info,
    /// The nodes of the cluster, and one gateway at a time.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Close every connection of a user, or one client's, on every gateway.
    Disconnect {
        #[arg(long, required_unless_present = "client")]
        user: Option<String>,
        #[arg(long)]
        client: Option<String>,
    },
    /// Unsubscribe every connection of a user from a channel.
    Unsubscribe { user: String, channel: String },
    /// Subscribe every live connection of a user to a channel.
    Subscribe { user: String, channel: String },
    /// Read, patch or delete a sync document.
    #[command(subcommand)]
    Sync(SyncCommand),
    /// Make a development connection token (HS256) for a user.
    Token(TokenArgs),
    /// Print an example config, or check a config file.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user id (`sub`).
    pub user: String,
    /// The HS256 secret; by default `auth.hmac_secret` of --config.
    #[arg(long, env = "HERALDCTL_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// A config file whose `auth.hmac_secret` signs the token.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// How long the token is good for (`30m`, `12h`, `7days`).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// The `info` claim, a JSON document shown to others in presence.
    #[arg(long)]
    pub info: Option<String>,
    /// A channel grant (`vip:*`); may be repeated.
    #[arg(long = "grant")]
    pub grants: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Every node that sent a heartbeat lately, with where its control service is.
    List,
    /// What one gateway holds now, asked of it directly.
    Info { node: String },
    /// Drain one gateway: it turns not ready and sends its clients away over its drain
    /// period (to reconnect elsewhere), then stays up, not ready, until it is stopped.
    Drain { node: String },
    /// The client connections of one gateway, by client id.
    Connections {
        node: String,
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
        /// At most this many (up to 10000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Print a sync document and its revision.
    Get { channel: String },
    /// Apply a JSON Merge Patch (`'{"status":"online","battery":null}'`) to a document.
    Patch {
        channel: String,
        /// A JSON object: members set, `null` members removed.
        patch: String,
        /// Apply only if the document is at this revision.
        #[arg(long)]
        base_rev: Option<u64>,
        /// ... of this epoch (a deleted document's revisions start again).
        #[arg(long, requires = "base_rev")]
        base_epoch: Option<String>,
        /// Applied once however often it is retried.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Delete a document and its patches; subscribers get the empty document.
    Delete { channel: String },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print a config file with every option and its default.
    Example,
    /// Check a config file (and HERALD_* variables); exit 1 with the reason when wrong.
    Check { file: PathBuf },
}
