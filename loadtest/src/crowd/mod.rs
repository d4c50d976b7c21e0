//! `herald-bench --crowd`: a large crowd of connections on one machine, native and
//! Socket.IO mixed, held with heartbeats, then a broadcast to all of them.
//!
//! One process may hold only so many files (20,000 on the machine this was written for),
//! and one source address reaches one gateway port through about 28,000 ephemeral ports,
//! so the crowd is spread over several gateway processes (one local cluster: NATS, Redis,
//! two routers, `--crowd-gateways` gateways) and several load-generator processes
//! ([`generator`]), each connecting from a loopback address of its own (127.0.0.x).
//!
//! Reported: how fast the connections were let in (all of them, over the time from the
//! first handshake to the last), the memory and CPU of every kind of process, the
//! heartbeats answered while the crowd is held, and whether every connection got every
//! broadcast (and how late).

pub mod generator;
mod report;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::SinkExt;
use herald_testkit::Cluster;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::peers::wire::{self, Dialect};
use crate::procfs;
use report::{Opened, Status};

/// The channel every connection is in: the Socket.IO sockets' namespace channel, which
/// native clients subscribe to.
const CHANNEL: &str = "/";

/// The emitter number of the broadcasts' payloads.
const BROADCASTER: u32 = 0;

/// Files a process needs beside its connections (listeners, NATS, Redis, logs).
const SPARE_FILES: usize = 200;

/// How long the broadcasts may take to reach everyone after the last was acknowledged.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long all generators together may take to open their connections.
const OPENING_TIMEOUT: Duration = Duration::from_secs(600);

/// Most broadcasts of one run: a connection keeps those it received as bits of a word.
pub const MAX_BROADCASTS: u32 = 62;

/// The size and shape of the crowd.
pub struct Plan {
    pub connections: usize,
    pub gateways: usize,
    pub generators: usize,
    pub hold: Duration,
    pub broadcasts: u32,
}

/// Connection `number` of the crowd speaks this protocol: every other one native.
fn dialect_of(number: usize) -> Dialect {
    match number % 2 {
        0 => Dialect::Native,
        _ => Dialect::SocketIo,
    }
}

/// The gateway of connection `number`, of `gateways`: each pair of connections (one per
/// protocol) goes to the next, so every gateway holds both protocols alike.
fn gateway_of(number: usize, gateways: usize) -> usize {
    (number / 2) % gateways
}

pub async fn run(herald: &Path, plan: &Plan) -> anyhow::Result<()> {
    if plan.connections == 0 || plan.gateways == 0 || plan.generators == 0 {
        bail!("the crowd needs connections, gateways and generators (at least one of each)");
    }
    if !(1..=MAX_BROADCASTS).contains(&plan.broadcasts) {
        bail!("--crowd-broadcasts must be 1 to {MAX_BROADCASTS}");
    }
    let files = raise_open_files_limit()?;
    let per_gateway = plan.connections.div_ceil(plan.gateways);
    let per_generator = plan.connections.div_ceil(plan.generators);
    if per_gateway.max(per_generator) + SPARE_FILES > files {
        bail!(
            "{per_gateway} connections per gateway and {per_generator} per generator do not fit \
             a process's {files} open files: raise --crowd-gateways and --crowd-generators"
        );
    }
    let max_connections = (per_gateway + 100).to_string();
    let settings = [
        ("HERALD_LOG__LEVEL", "warn"),
        ("RUST_LOG", "warn"),
        ("HERALD_GATEWAY__MAX_CONNECTIONS", max_connections.as_str()),
    ];
    let cluster = Cluster::start(herald, plan.gateways, 2, &settings);
    let gateways: Vec<SocketAddr> = cluster.gateways.iter().map(|g| g.addr()).collect();
    let mut processes = procfs::of_cluster(&cluster);
    println!(
        "crowd: {} connections (half native, half Socket.IO) over {} gateways, from {} generators",
        plan.connections, plan.gateways, plan.generators
    );
    let before = memory(&processes);

    let mut generators = Vec::new();
    for g in 0..plan.generators {
        let first = g * per_generator;
        let count = per_generator.min(plan.connections.saturating_sub(first));
        generators.push(Generator::spawn(g, first, count, &gateways)?);
    }
    for g in &generators {
        processes.push(("generators", g.pid));
    }
    let mut opened = Vec::new();
    let deadline = Instant::now() + OPENING_TIMEOUT;
    for g in &mut generators {
        let line = g
            .line(deadline.saturating_duration_since(Instant::now()))
            .await?;
        opened.push(Opened::parse(&line)?);
    }
    let ok: u64 = opened.iter().map(|o| o.ok).sum();
    let failed: u64 = opened.iter().map(|o| o.failed).sum();
    let start = opened.iter().map(|o| o.start_us).min().unwrap_or(0);
    let end = opened.iter().map(|o| o.end_us).max().unwrap_or(0);
    let seconds = end.saturating_sub(start) as f64 / 1e6;
    println!(
        "opened {ok} connections ({failed} failed) in {seconds:.1} s: {:.0} connections/s",
        ok as f64 / seconds.max(1e-6)
    );
    if ok == 0 {
        bail!("no connection could be opened");
    }
    let after = memory(&processes);
    print_memory(&before, &after, ok);

    let cpu_before = cpu(&processes);
    let held = Instant::now();
    let mut status = Status::default();
    while held.elapsed() < plan.hold {
        let left = plan.hold.saturating_sub(held.elapsed());
        tokio::time::sleep(Duration::from_secs(10).min(left)).await;
        status = ask(&mut generators, 0).await?;
        println!(
            "  held {:>3.0} s: {} open, {} closed by the server; since connecting, {} Socket.IO pings and {} of {} native pings answered",
            held.elapsed().as_secs_f64(),
            ok - status.cut,
            status.cut,
            status.pongs,
            status.answered,
            status.pings
        );
    }
    if !plan.hold.is_zero() {
        print_cpu(&cpu_before, &cpu(&processes), held.elapsed());
    }
    if status.cut > 0 {
        println!("{} connections were closed while held", status.cut);
    }

    let status = broadcast(&mut generators, gateways[0], plan.broadcasts, ok).await?;
    let (lost, extra) = (status.missing, status.extra);
    println!(
        "{} broadcasts to all: {} of {ok} connections got every one, {lost} deliveries lost, \
         {extra} duplicated; latency (the worst generator's) p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        plan.broadcasts,
        status.complete,
        status.p50_us as f64 / 1000.0,
        status.p99_us as f64 / 1000.0,
        status.max_us as f64 / 1000.0
    );
    drop(generators);
    if failed > 0 || lost > 0 || extra > 0 {
        bail!(
            "{failed} connections failed, {lost} broadcast deliveries were lost and {extra} duplicated"
        );
    }
    Ok(())
}

/// Publishes `count` payloads on the crowd's channel from a connection of its own, then
/// waits until every connection has them all (or [`DELIVERY_TIMEOUT`] passes).
async fn broadcast(
    generators: &mut [Generator],
    gateway: SocketAddr,
    count: u32,
    connections: u64,
) -> anyhow::Result<Status> {
    let mut ws = Dialect::Native.open(gateway).await?;
    for seq in 1..=count {
        let id = 100 + u64::from(seq);
        let payload = wire::payload(BROADCASTER, u64::from(seq));
        ws.send(Dialect::Native.publish(CHANNEL, &payload, id))
            .await?;
        wire::expect_reply(&mut ws, id)
            .await
            .context("the broadcast was not acknowledged")?;
    }
    let sent = Instant::now();
    loop {
        let status = ask(generators, count).await?;
        if status.complete >= connections || sent.elapsed() > DELIVERY_TIMEOUT {
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every generator's status after `broadcasts`, summed.
async fn ask(generators: &mut [Generator], broadcasts: u32) -> anyhow::Result<Status> {
    let mut total = Status::default();
    for g in generators.iter_mut() {
        g.stdin
            .write_all(format!("status {broadcasts}\n").as_bytes())
            .await?;
    }
    for g in generators.iter_mut() {
        total.add(&Status::parse(&g.line(Duration::from_secs(30)).await?)?);
    }
    Ok(total)
}

/// A load-generator process, killed on drop.
struct Generator {
    pid: u32,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    _child: Child,
}

impl Generator {
    fn spawn(
        index: usize,
        first: usize,
        count: usize,
        gateways: &[SocketAddr],
    ) -> anyhow::Result<Self> {
        // 127.0.0.1 is left to the servers' own connections.
        let source = IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            (index / 250) as u8,
            2 + (index % 250) as u8,
        ));
        let gateways: Vec<String> = gateways.iter().map(|g| g.to_string()).collect();
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--crowd-child")
            .args(["--child-first", &first.to_string()])
            .args(["--child-count", &count.to_string()])
            .args(["--child-source", &source.to_string()])
            .args(["--child-gateways", &gateways.join(",")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a load generator")?;
        let pid = child.id().context("the generator exited at once")?;
        let stdin = child.stdin.take().context("stdin is piped")?;
        let stdout = BufReader::new(child.stdout.take().context("stdout is piped")?).lines();
        Ok(Self {
            pid,
            stdin,
            stdout,
            _child: child,
        })
    }

    async fn line(&mut self, timeout: Duration) -> anyhow::Result<String> {
        tokio::time::timeout(timeout, self.stdout.next_line())
            .await
            .context("a generator did not answer in time")??
            .context("a generator exited")
    }
}

/// Resident memory by kind of process, in bytes.
fn memory(processes: &[(&'static str, u32)]) -> Vec<(&'static str, u64)> {
    procfs::by_kind(processes, |pid| procfs::rss_bytes(pid).unwrap_or(0))
}

/// CPU seconds used so far by kind of process.
fn cpu(processes: &[(&'static str, u32)]) -> Vec<(&'static str, f64)> {
    procfs::by_kind(processes, |pid| procfs::cpu_seconds(pid).unwrap_or(0.0))
}

/// Each kind's resident memory, and what the servers gained per connection (the
/// generators, started with the crowd, hold theirs in all).
fn print_memory(before: &[(&str, u64)], after: &[(&'static str, u64)], connections: u64) {
    let per_connection = |bytes: u64| bytes as f64 / 1024.0 / connections as f64;
    let parts: Vec<String> = after
        .iter()
        .map(|(kind, bytes)| {
            let mib = *bytes as f64 / 1048576.0;
            match before.iter().find(|(k, _)| k == kind) {
                Some((_, was)) => format!(
                    "{kind} {mib:.0} MiB (+{:.1} KiB per connection)",
                    per_connection(bytes.saturating_sub(*was))
                ),
                None => format!(
                    "{kind} {mib:.0} MiB ({:.1} KiB per connection in all)",
                    per_connection(*bytes)
                ),
            }
        })
        .collect();
    println!("resident memory: {}", parts.join(", "));
}

fn print_cpu(before: &[(&str, f64)], after: &[(&'static str, f64)], over: Duration) {
    let parts: Vec<String> = after
        .iter()
        .map(|(kind, seconds)| {
            let was = procfs::of_kind(before, kind);
            format!("{kind} {:.2}", (seconds - was) / over.as_secs_f64())
        })
        .collect();
    println!("CPU while held, in cores: {}", parts.join(", "));
}

/// Raises this process's soft limit on open files to its hard limit, which the servers
/// and generators it starts inherit, and returns it.
fn raise_open_files_limit() -> anyhow::Result<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for the call to fill in and read.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: as above; lowering nothing, raising the soft limit to the hard one.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
    }
    Ok(usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}
