//! Redis as operators run it, for tests: a server that requires TLS, a client certificate
//! and an ACL user ([`RedisTls`]); a primary and its replica watched by three sentinels
//! ([`RedisSentinel`]); a Cluster of three primaries ([`RedisCluster`]). Every process is a
//! real `redis-server` on free loopback ports, killed on `Drop`; `redis-cli` (from the
//! same Debian package) sets them up and reads their state.

use std::process::Command;
use std::time::Duration;

use crate::scratch::Scratch;
use crate::servers::{Server, find_binary, free_port};
use crate::tls::TlsFiles;
use crate::wait::wait_for;

const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `redis-cli` against the server on `port` and returns what it printed, or `None`
/// if it failed.
pub fn cli(port: u16, args: &[&str]) -> Option<String> {
    let output = Command::new(find_binary("redis-cli"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The value of `field` in an `INFO`-style reply (`field:value` lines).
fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(|value| value.trim().to_string())
}

/// A `redis-server` that speaks only TLS, wants a client certificate from the test CA,
/// and lets in only the ACL user [`RedisTls::USER`] (the default user is off).
pub struct RedisTls {
    pub server: Server,
    /// The CA's certificate, and the client's certificate and key, as PEM files.
    pub tls: TlsFiles,
}

impl RedisTls {
    pub const USER: &str = "herald";
    pub const PASSWORD: &str = "s3cret-for-tests";

    pub fn start() -> Self {
        let tls = TlsFiles::generate("redis-tls");
        let port = free_port();
        let (port_text, password) = (port.to_string(), format!(">{}", Self::PASSWORD));
        let (ca, cert, key) = (
            TlsFiles::text(&tls.ca_file),
            TlsFiles::text(&tls.cert_file),
            TlsFiles::text(&tls.key_file),
        );
        let args = [
            "--port",
            "0",
            "--tls-port",
            &port_text,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "yes",
            "--user",
            "default",
            "off",
            "--user",
            Self::USER,
            "on",
            &password,
            "~*",
            "&*",
            "+@all",
        ];
        Self {
            server: Server::redis_on(port, "rediss", &args),
            tls,
        }
    }

    /// `rediss://127.0.0.1:<port>`, without credentials.
    pub fn url(&self) -> String {
        self.server.url()
    }
}

/// A primary and two replicas, watched by three sentinels (quorum 2) under the service
/// name [`RedisSentinel::SERVICE`], which declare a primary down after 1 s of silence.
/// Two replicas, so that one is left to confirm writes (`WAIT 1`) after a failover.
pub struct RedisSentinel {
    // Sentinels first: fields drop in order, and a sentinel must not see the servers go
    // and start a failover.
    pub sentinels: Vec<Server>,
    pub primary: Server,
    pub replicas: Vec<Server>,
    _files: Scratch,
}

impl RedisSentinel {
    pub const SERVICE: &str = "herald";

    /// Starts them all and waits until the replicas are in sync and each sentinel knows
    /// them and the other two sentinels.
    pub fn start() -> Self {
        let files = Scratch::new("redis-sentinel");
        // A replica keeps the copy it syncs from as a file: in the scratch directory.
        let dir = files.path().to_string_lossy().into_owned();
        let primary = Server::redis_with(&["--dir", &dir]);
        let primary_port = primary.port().to_string();
        let replicas: Vec<Server> = (0..2)
            .map(|i| {
                let name = format!("replica-{i}.rdb");
                let args = [
                    "--dir",
                    &dir,
                    "--dbfilename",
                    &name,
                    "--replicaof",
                    "127.0.0.1",
                ];
                Server::redis_with(&[&args[..], &[primary_port.as_str()]].concat())
            })
            .collect();
        let in_sync = wait_for(SETUP_TIMEOUT, || {
            replicas.iter().all(|replica| {
                cli(replica.port(), &["INFO", "replication"])
                    .and_then(|info| info_field(&info, "master_link_status"))
                    .is_some_and(|status| status == "up")
            })
        });
        assert!(in_sync, "the replicas did not sync with their primary");
        let sentinels = (0..3)
            .map(|i| {
                let port = free_port();
                let config = format!(
                    "port {port}\nbind 127.0.0.1\n\
                     sentinel monitor {service} 127.0.0.1 {primary_port} 2\n\
                     sentinel down-after-milliseconds {service} 1000\n\
                     sentinel failover-timeout {service} 5000\n",
                    service = Self::SERVICE,
                );
                let file = files.write(&format!("sentinel-{i}.conf"), &config);
                let file = file.to_string_lossy().into_owned();
                Server::start("redis-server", "redis", port, &[&file, "--sentinel"])
            })
            .collect::<Vec<_>>();
        let watching = wait_for(SETUP_TIMEOUT, || {
            sentinels.iter().all(|sentinel| {
                let state = cli(sentinel.port(), &["SENTINEL", "master", Self::SERVICE]);
                let field = |name: &str| state.as_deref().and_then(|s| pair_after(s, name));
                field("num-slaves").as_deref() == Some("2")
                    && field("num-other-sentinels").as_deref() == Some("2")
            })
        });
        assert!(
            watching,
            "the sentinels did not find the replicas and each other"
        );
        Self {
            sentinels,
            primary,
            replicas,
            _files: files,
        }
    }

    /// `redis-sentinel://` with every sentinel and the service name.
    pub fn url(&self) -> String {
        let mut nodes = self.sentinels.iter().map(|s| s.addr().to_string());
        let first = nodes.next().expect("three sentinels");
        let others: String = nodes.map(|node| format!("node={node}&")).collect();
        format!(
            "redis-sentinel://{first}?{others}sentinelServiceName={}",
            Self::SERVICE
        )
    }

    /// The port of the server the sentinels name as primary now.
    pub fn primary_port(&self) -> Option<u16> {
        let reply = cli(
            self.sentinels[0].port(),
            &["SENTINEL", "get-master-addr-by-name", Self::SERVICE],
        )?;
        reply.lines().nth(1)?.trim().parse().ok()
    }
}

/// In a reply printed as alternating lines of names and values, the value after `name`.
fn pair_after(reply: &str, name: &str) -> Option<String> {
    let mut lines = reply.lines().map(str::trim);
    lines.find(|line| *line == name)?;
    lines.next().map(String::from)
}

/// A Redis Cluster of three primaries, every slot assigned, each primary with
/// `replicas` replicas.
pub struct RedisCluster {
    /// The primaries first, then the replicas (as `redis-cli --cluster create` pairs them).
    pub nodes: Vec<Server>,
    _files: Scratch,
}

impl RedisCluster {
    /// Three primaries without replicas.
    pub fn start() -> Self {
        Self::with_replicas(0)
    }

    /// Starts the nodes, joins them with `redis-cli --cluster create`, and waits until
    /// each reports the cluster ok and every replica is in sync.
    pub fn with_replicas(replicas: usize) -> Self {
        let files = Scratch::new("redis-cluster");
        let dir = files.path().to_string_lossy().into_owned();
        let nodes: Vec<Server> = (0..3 * (1 + replicas))
            .map(|i| {
                let (state, data) = (format!("nodes-{i}.conf"), format!("dump-{i}.rdb"));
                // The bus port is the client port + 10,000 unless given, which Redis
                // refuses above 55535, where free ports often are.
                let bus = free_port().to_string();
                Server::redis_with(&[
                    "--dir",
                    &dir,
                    "--dbfilename",
                    &data,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus,
                    "--cluster-config-file",
                    &state,
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr().to_string()).collect();
        let per_primary = replicas.to_string();
        let mut create = vec!["--cluster", "create"];
        create.extend(addrs.iter().map(String::as_str));
        create.extend(["--cluster-replicas", &per_primary, "--cluster-yes"]);
        assert!(
            cli(nodes[0].port(), &create).is_some(),
            "redis-cli --cluster create failed"
        );
        let ok = wait_for(SETUP_TIMEOUT, || {
            nodes.iter().all(|node| {
                let state = cli(node.port(), &["CLUSTER", "INFO"])
                    .and_then(|info| info_field(&info, "cluster_state"));
                let replication = cli(node.port(), &["INFO", "replication"]).unwrap_or_default();
                state.is_some_and(|state| state == "ok")
                    && info_field(&replication, "role").is_some_and(|role| {
                        role == "master"
                            || info_field(&replication, "master_link_status").as_deref()
                                == Some("up")
                    })
            })
        });
        assert!(ok, "the cluster did not come up");
        Self {
            nodes,
            _files: files,
        }
    }

    /// The index in [`Self::nodes`] of the primary that holds `key`'s slot now.
    pub fn primary_of(&self, key: &str) -> Option<usize> {
        let any = self.nodes.iter().find(|n| n.pid().is_some())?.port();
        let slot: u16 = cli(any, &["CLUSTER", "KEYSLOT", key])?
            .trim()
            .parse()
            .ok()?;
        let table = cli(any, &["CLUSTER", "NODES"])?;
        // `<id> <ip:port@bus> <flags> <primary> <ping> <pong> <epoch> <link> <slots>…`
        let line = table.lines().find(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 8
                && fields[2].contains("master")
                && !fields[2].contains("fail")
                && fields[8..].iter().any(|range| {
                    let (low, high) = range.split_once('-').unwrap_or((range, range));
                    matches!((low.parse::<u16>(), high.parse::<u16>()),
                        (Ok(low), Ok(high)) if (low..=high).contains(&slot))
                })
        })?;
        let port: u16 = line
            .split_whitespace()
            .nth(1)?
            .split('@')
            .next()?
            .rsplit(':')
            .next()?
            .parse()
            .ok()?;
        self.nodes.iter().position(|n| n.port() == port)
    }

    /// `redis-cluster://` with every node.
    pub fn url(&self) -> String {
        let mut nodes = self.nodes.iter().map(|n| n.addr().to_string());
        let first = nodes.next().expect("three nodes at least");
        let others: Vec<String> = nodes.map(|node| format!("node={node}")).collect();
        format!("redis-cluster://{first}?{}", others.join("&"))
    }

    /// How many keys node `i` holds.
    pub fn keys_on(&self, i: usize) -> u64 {
        cli(self.nodes[i].port(), &["DBSIZE"])
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}
