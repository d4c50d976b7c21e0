//! `herald-bench`: publish-to-delivery benchmark on a real local cluster.
//!
//! Starts `nats-server`, `redis-server`, one router and two gateways (processes of the
//! release `herald` binary), puts one publisher on gateway A and one subscriber on gateway
//! B, and measures two things, several runs each:
//!
//! - **throughput**: the publisher keeps `--window` publishes in flight; publications per
//!   second from the first send to the last delivery, and the latencies under that load;
//! - **latency**: the publisher sends at a fixed `--rate`, well below saturation; the
//!   publish-to-delivery latency of an unloaded cluster;
//! - **Socket.IO throughput**: the same as the first, with Socket.IO sockets (events with
//!   acks over Engine.IO on WebSocket) instead of native clients; once as a default socket
//!   receives them (exactly the emitted arguments), once with connection state recovery
//!   (each event ends with its offset string);
//! - **slow consumer**: paced publications of `--stuck-payload` bytes, once as they are and
//!   once with a subscriber that reads nothing beside the reader on gateway B: the reader's
//!   latencies side by side, and whether the stuck subscriber was cut (code 3004).
//!
//! - **memory**: gateway resident memory per idle connection subscribed to a channel of its
//!   own, on a fresh cluster each run (`--idle-connections`, 0 to skip).
//!
//! With `--abuse`, it measures instead what two attacks cost a node (see [`abuse`]); with
//! `--sync`, sync document patches and their fan-out (see [`sync`]).
//! `--hooks`, what a publish hook adds to a publish, and the consume stream (see [`hooks`]);
//! with `--peers`, Herald beside Socket.IO-Node and NATS over WebSocket (see [`peers`]);
//! with `--crowd`, 100,000 connections held and broadcast to (see [`crowd`]).
//!
//! Latency is measured from the moment the publisher sends the command to the moment the
//! subscriber has read the publication (one clock, one machine). Reports each run and the
//! medians.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use herald_core::time::unix_micros;
use herald_testkit::{Cluster, NativeClient};
use serde_json::json;

mod abuse;
mod crowd;
mod hooks;
mod memory;
mod peers;
mod procfs;
mod rate;
mod socketio;
mod stuck;
mod sync;

#[derive(Debug, Parser)]
#[command(about = "Publish-to-delivery benchmark on a real local Herald cluster")]
struct Args {
    /// The herald binary (build it with `cargo build --release`).
    #[arg(long, default_value = "target/release/herald")]
    herald: PathBuf,
    /// Runs of each scenario; medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Publications per throughput run.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Publishes in flight in the throughput scenario.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Publications per second in the latency scenario.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Publications per latency run.
    #[arg(long, default_value_t = 3000)]
    latency_messages: usize,
    /// Events per Socket.IO run.
    #[arg(long, default_value_t = 10_000)]
    socketio_messages: usize,
    /// Bytes of padding per publication in the slow-consumer scenario.
    #[arg(long, default_value_t = 16 * 1024)]
    stuck_payload: usize,
    /// Connections per run of the memory scenario; 0 skips it.
    #[arg(long, default_value_t = 5000)]
    idle_connections: usize,
    /// Run the abuse scenarios instead: history reads of names nobody used, and one
    /// socket joining many rooms.
    #[arg(long)]
    abuse: bool,
    /// History reads per run of the reads scenario.
    #[arg(long, default_value_t = 100_000)]
    reads: usize,
    /// Rooms one socket joins per run of the rooms scenario.
    #[arg(long, default_value_t = 2000)]
    rooms: usize,
    /// A setting for the nodes of the abuse scenarios, `HERALD_…=value` (repeatable), such
    /// as `HERALD_SOCKETIO__MAX_ROOMS=2048` for a release that limits rooms.
    #[arg(long = "node-env", value_parser = key_value)]
    node_env: Vec<(String, String)>,
    /// Run the sync document scenarios instead: patches per second on one document and on
    /// many, and the fan-out of patches to subscribers.
    #[arg(long)]
    sync: bool,
    /// Run the backend scenarios instead: publishes without a hook, with a publish hook
    /// over gRPC and over HTTP (`--patchers` connections, `--patches` each), and a consume
    /// stream of the first.
    #[arg(long)]
    hooks: bool,
    /// Connections patching at once in the sync scenarios.
    #[arg(long, default_value_t = 16)]
    patchers: usize,
    /// Patches each of them sends per run.
    #[arg(long, default_value_t = 1000)]
    patches: usize,
    /// Documents of the many-documents scenario.
    #[arg(long, default_value_t = 100)]
    documents: usize,
    /// Subscribers of the fan-out scenario.
    #[arg(long, default_value_t = 200)]
    subscribers: usize,
    /// Patches per second of the fan-out scenario, from one connection (which has its
    /// patches applied one after the other: keep this below one per round trip).
    #[arg(long, default_value_t = 200)]
    patch_rate: u64,
    /// Run the comparison with the peers instead: Herald, a Socket.IO-Node cluster and
    /// NATS over WebSocket, side by side (loadtest/README.md).
    #[arg(long)]
    peers: bool,
    /// Systems of the comparison (default: all): socketio-node, nats-ws, herald-socketio,
    /// herald-native, herald-socketio-nohistory, herald-native-nohistory (the last two run
    /// scenario iv only).
    #[arg(long, value_delimiter = ',', value_parser = target)]
    targets: Vec<peers::Target>,
    /// Scenarios of the comparison: i, ii, iii, iii-shared, iv (default: all).
    #[arg(long, value_delimiter = ',', value_parser = scenario)]
    scenarios: Vec<peers::Scenario>,
    /// Receivers of the paced fan-out (i).
    #[arg(long, default_value_t = 1000)]
    paced_receivers: usize,
    /// Payloads per second of the paced fan-out (i).
    #[arg(long, default_value_t = 200)]
    paced_rate: u64,
    /// Seconds of the paced fan-out (i).
    #[arg(long, default_value_t = 20)]
    paced_seconds: u64,
    /// Seconds of each saturation scenario (ii, iv).
    #[arg(long, default_value_t = 10)]
    saturation_seconds: u64,
    /// Payloads each chat emitter (ii) may have undelivered.
    #[arg(long, default_value_t = 32)]
    chat_window: u64,
    /// Payloads the fan-out emitter (iv) may have undelivered.
    #[arg(long, default_value_t = 256)]
    fan_window: u64,
    /// Connections of the idle scenario (iii).
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Leave CPU scheduling alone instead of pinning servers to CPU 0 and the load
    /// generator to CPU 1.
    #[arg(long)]
    no_pin: bool,
    /// Run the crowd instead: many connections, native and Socket.IO mixed, held with
    /// heartbeats, then broadcasts to all of them (loadtest/README.md).
    #[arg(long)]
    crowd: bool,
    /// Connections of the crowd.
    #[arg(long, default_value_t = 100_000)]
    crowd_connections: usize,
    /// Gateway processes the crowd is spread over.
    #[arg(long, default_value_t = 6)]
    crowd_gateways: usize,
    /// Load-generator processes the crowd is spread over.
    #[arg(long, default_value_t = 6)]
    crowd_generators: usize,
    /// Seconds the crowd is held before the broadcasts.
    #[arg(long, default_value_t = 60)]
    crowd_hold: u64,
    /// Broadcasts to the whole crowd (1 to 62).
    #[arg(long, default_value_t = 3)]
    crowd_broadcasts: u32,
    /// Internal: run as one load generator of the crowd (started by `--crowd`).
    #[arg(long, hide = true)]
    crowd_child: bool,
    #[arg(long, hide = true, default_value_t = 0)]
    child_first: usize,
    #[arg(long, hide = true, default_value_t = 0)]
    child_count: usize,
    #[arg(long, hide = true, default_value = "127.0.0.1")]
    child_source: std::net::IpAddr,
    #[arg(long, hide = true, value_delimiter = ',')]
    child_gateways: Vec<std::net::SocketAddr>,
}

fn target(name: &str) -> Result<peers::Target, String> {
    peers::Target::ALL
        .into_iter()
        .find(|t| t.name() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = peers::Target::ALL.iter().map(|t| t.name()).collect();
            format!("one of {}", names.join(", "))
        })
}

fn scenario(name: &str) -> Result<peers::Scenario, String> {
    peers::Scenario::ALL
        .into_iter()
        .find(|s| s.name() == name)
        .ok_or_else(|| "one of i, ii, iii, iii-shared, iv".to_string())
}

fn key_value(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or("expected KEY=VALUE")?;
    Ok((key.to_string(), value.to_string()))
}

/// Every gateway's outbound queue, in frames: the slow-consumer scenario sends several
/// times what it holds. (The default of 4,096 would take minutes to fill at the paced rate.)
const OUTBOUND_QUEUE: &str = "1024";

struct RunResult {
    per_second: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.crowd_child {
        // One thread per generator: the crowd runs several generators beside the servers
        // on few cores, and more threads would only add switches between them.
        let share = crowd::generator::Share {
            first: args.child_first,
            count: args.child_count,
            source: args.child_source,
            gateways: args.child_gateways,
        };
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(crowd::generator::run(share));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    if !args.herald.is_file() {
        bail!(
            "{} not found: run `cargo build --release` first",
            args.herald.display()
        );
    }
    if args.abuse {
        return run_abuse(&args).await;
    }
    if args.sync {
        return run_sync(&args).await;
    }
    if args.hooks {
        return run_hooks(&args).await;
    }
    if args.peers {
        return run_peers(&args).await;
    }
    if args.crowd {
        let plan = crowd::Plan {
            connections: args.crowd_connections,
            gateways: args.crowd_gateways,
            generators: args.crowd_generators,
            hold: Duration::from_secs(args.crowd_hold),
            broadcasts: args.crowd_broadcasts,
        };
        return crowd::run(&args.herald, &plan).await;
    }
    let settings = [
        ("HERALD_LOG__LEVEL", "warn"),
        ("HERALD_GATEWAY__OUTBOUND_QUEUE", OUTBOUND_QUEUE),
    ];
    let cluster = Cluster::start(&args.herald, 2, 1, &settings);
    println!(
        "cluster: nats {}, redis {}, 1 router, gateways {} and {}",
        cluster.nats.url(),
        cluster.redis.url(),
        cluster.gateways[0].addr(),
        cluster.gateways[1].addr()
    );
    let mut throughput = Vec::new();
    let mut latency = Vec::new();
    let mut socketio = Vec::new();
    let mut recovering = Vec::new();
    let mut padded = Vec::new();
    let mut stuck = Vec::new();
    let mut cuts = 0;
    let paced = Pace::Rate(args.rate);
    for run in 0..args.runs {
        let result = measure(
            &cluster,
            &format!("bench:t{run}"),
            args.messages,
            Pace::Window(args.window),
            0,
        )
        .await?;
        report("throughput", run, &result);
        throughput.push(result);
        let result = measure(
            &cluster,
            &format!("bench:l{run}"),
            args.latency_messages,
            paced,
            0,
        )
        .await?;
        report("latency", run, &result);
        latency.push(result);
        let channel = format!("bench:p{run}");
        let (n, padding) = (args.latency_messages, args.stuck_payload);
        let result = measure(&cluster, &channel, n, paced, padding).await?;
        report("padded", run, &result);
        padded.push(result);
        let channel = format!("bench:s{run}");
        let (result, cut) = measure_beside_stuck(&cluster, &channel, &args).await?;
        report("+stuck", run, &result);
        cuts += usize::from(cut);
        stuck.push(result);
        let (a, b) = (cluster.gateways[0].addr(), cluster.gateways[1].addr());
        let n = args.socketio_messages;
        let result = socketio::measure(a, b, n, args.window, false).await?;
        report("socket.io", run, &result);
        socketio.push(result);
        let result = socketio::measure(a, b, n, args.window, true).await?;
        report("socket.io+recovery", run, &result);
        recovering.push(result);
    }
    println!();
    summary(&format!("throughput (window {})", args.window), &throughput);
    summary(&format!("latency at {}/s", args.rate), &latency);
    summary(&format!("Socket.IO (window {})", args.window), &socketio);
    let name = format!("Socket.IO with recovery (window {})", args.window);
    summary(&name, &recovering);
    let padded_name = format!("{} B at {}/s", args.stuck_payload, args.rate);
    summary(&padded_name, &padded);
    summary(&format!("{padded_name}, a stuck subscriber beside"), &stuck);
    println!(
        "stuck subscriber cut with 3004 in {cuts} of {} runs",
        args.runs
    );
    if args.idle_connections > 0 {
        drop(cluster);
        let mut per_connection = Vec::new();
        for run in 0..args.runs {
            let bytes = memory::per_connection(&args.herald, args.idle_connections).await?;
            println!("    memory run {}: {bytes:.0} B per connection", run + 1);
            per_connection.push(bytes);
        }
        println!(
            "median of {} runs, memory with {} subscribed connections: {:.1} KiB per connection",
            args.runs,
            args.idle_connections,
            median(per_connection) / 1024.0
        );
    }
    Ok(())
}

/// The abuse scenarios, `--runs` times each; every run and the medians.
async fn run_abuse(args: &Args) -> anyhow::Result<()> {
    let (mut memory, mut keys, mut joins) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=args.runs {
        let (before, after) = abuse::reads_standalone(&args.herald, args.reads).await?;
        println!("    reads run {run}: standalone {before:.1} -> {after:.1} MiB");
        memory.push(after - before);
        let (before, after) = abuse::reads_cluster(&args.herald, args.reads).await?;
        println!("    reads run {run}: Redis {before} -> {after} keys");
        keys.push(after.saturating_sub(before) as f64);
        let (first, last) = abuse::rooms(&args.herald, args.rooms, &args.node_env).await?;
        println!(
            "    rooms run {run}: a join {first:.2} ms in the first quarter, {last:.2} ms in the last"
        );
        joins.push((first, last));
    }
    let (first, last): (Vec<f64>, Vec<f64>) = joins.into_iter().unzip();
    let (first, last) = (median(first), median(last));
    println!();
    println!(
        "medians of {} runs: {} reads of unused names grow a standalone node by {:.1} MiB and Redis by {:.0} keys; \
         joining {} rooms, a join takes {first:.2} ms at first and {last:.2} ms at the end ({:.2}x)",
        args.runs,
        args.reads,
        median(memory),
        median(keys),
        args.rooms,
        last / first
    );
    Ok(())
}

/// The sync document scenarios, `--runs` times each on one cluster of two gateways and
/// two routers; every run and the medians.
async fn run_sync(args: &Args) -> anyhow::Result<()> {
    let cluster = Cluster::start(&args.herald, 2, 2, &sync::SETTINGS);
    let (mut one, mut many, mut fan) = (Vec::new(), Vec::new(), Vec::new());
    let fan_patches = args.patch_rate as usize * 5;
    for run in 0..args.runs {
        let result = sync::patch_rate(&cluster, run, 1, args.patchers, args.patches).await?;
        report("1 doc", run, &result);
        one.push(result);
        let documents = args.documents;
        let result =
            sync::patch_rate(&cluster, run, documents, args.patchers, args.patches).await?;
        report(&format!("{documents} docs"), run, &result);
        many.push(result);
        let result = sync::fan_out(
            &cluster,
            run,
            args.subscribers,
            fan_patches,
            args.patch_rate,
        )
        .await?;
        report("fan-out", run, &result);
        fan.push(result);
    }
    println!();
    let patchers = args.patchers;
    summary(
        &format!("patches on one document ({patchers} patchers)"),
        &one,
    );
    let name = format!(
        "patches on {} documents ({patchers} patchers)",
        args.documents
    );
    summary(&name, &many);
    let name = format!(
        "fan-out of {}/s patches to {} subscribers (deliveries)",
        args.patch_rate, args.subscribers
    );
    summary(&name, &fan);
    Ok(())
}

/// The backend scenarios, `--runs` times each on one cluster of two gateways and two
/// routers; every run and the medians.
async fn run_hooks(args: &Args) -> anyhow::Result<()> {
    let backend = herald_testkit::TestBackend::start().await;
    let settings = hooks::settings(&backend);
    let env: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let cluster = Cluster::start(&args.herald, 2, 2, &env);
    let namespaces = ["plain", "grpc", "http"];
    let mut results: Vec<Vec<RunResult>> = (0..=namespaces.len()).map(|_| Vec::new()).collect();
    let count = args.patchers * args.patches;
    for run in 0..args.runs {
        let mut order: Vec<usize> = (0..namespaces.len()).collect();
        if run % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let namespace = namespaces[i];
            let consumer = match namespace {
                "plain" => Some(hooks::consume(&cluster, run, count).await?),
                _ => None,
            };
            let started = Instant::now();
            let result =
                hooks::publish_rate(&cluster, namespace, run, args.patchers, args.patches).await?;
            report(namespace, run, &result);
            results[i].push(result);
            if let Some(consumer) = consumer {
                let (histogram, done) = consumer.await??;
                let elapsed = done.duration_since(started);
                let result = rate::result(&[histogram], count, elapsed)?;
                report("consume", run, &result);
                results[namespaces.len()].push(result);
            }
        }
    }
    println!();
    let patchers = args.patchers;
    for (i, name) in ["no hook", "publish hook, gRPC", "publish hook, HTTP"]
        .iter()
        .enumerate()
    {
        summary(
            &format!("publishes, {name} ({patchers} publishers)"),
            &results[i],
        );
    }
    summary(
        "consume stream of the publishes without a hook (publish to consumption)",
        &results[namespaces.len()],
    );
    Ok(())
}

/// The comparison with the peers.
async fn run_peers(args: &Args) -> anyhow::Result<()> {
    let setup = peers::Setup {
        herald: &args.herald,
        runs: args.runs,
        targets: match args.targets.is_empty() {
            true => peers::Target::ALL.to_vec(),
            false => args.targets.clone(),
        },
        scenarios: match args.scenarios.is_empty() {
            true => peers::Scenario::ALL.to_vec(),
            false => args.scenarios.clone(),
        },
        knobs: peers::Knobs {
            paced_receivers: args.paced_receivers,
            paced_rate: args.paced_rate,
            paced_seconds: args.paced_seconds,
            saturation_seconds: args.saturation_seconds,
            chat_window: args.chat_window,
            fan_window: args.fan_window,
            idle: args.idle,
        },
        cpus: (!args.no_pin).then_some((0, 1)),
    };
    peers::run(&setup).await
}

/// A paced run with a stuck subscriber on the reader's gateway; whether it was cut.
async fn measure_beside_stuck(
    cluster: &Cluster,
    channel: &str,
    args: &Args,
) -> anyhow::Result<(RunResult, bool)> {
    let stuck = stuck::Stuck::subscribe(cluster.gateways[1].addr(), channel).await?;
    let pace = Pace::Rate(args.rate);
    let result = measure(
        cluster,
        channel,
        args.latency_messages,
        pace,
        args.stuck_payload,
    )
    .await?;
    Ok((result, stuck.was_cut().await))
}

#[derive(Debug, Clone, Copy)]
enum Pace {
    /// Keep this many publishes in flight.
    Window(usize),
    /// Send this many per second.
    Rate(u64),
}

async fn measure(
    cluster: &Cluster,
    channel: &str,
    n: usize,
    pace: Pace,
    padding: usize,
) -> anyhow::Result<RunResult> {
    let publisher = NativeClient::connect(&cluster.ws_url(0))
        .await
        .map_err(anyhow::Error::msg)?;
    let subscriber = NativeClient::connect(&cluster.ws_url(1))
        .await
        .map_err(anyhow::Error::msg)?;
    subscriber
        .ok("subscribe", json!({ "channel": channel }))
        .await
        .map_err(anyhow::Error::msg)?;

    let started = Instant::now();
    let channel_name = channel.to_string();
    // One task sends every command, in order, and keeps up to `window` replies pending.
    let sender = tokio::spawn(async move {
        let mut pending = futures_util::stream::FuturesUnordered::new();
        let mut tick = match pace {
            Pace::Rate(rate) => Some(tokio::time::interval(Duration::from_micros(
                1_000_000 / rate,
            ))),
            Pace::Window(_) => None,
        };
        let window = match pace {
            Pace::Window(window) => window,
            Pace::Rate(_) => usize::MAX,
        };
        let pad = "x".repeat(padding);
        for i in 0..n {
            if let Some(tick) = tick.as_mut() {
                tick.tick().await;
            }
            while pending.len() >= window {
                check(pending.next().await)?;
            }
            let data = match padding {
                0 => json!({ "i": i, "t": unix_micros() }),
                _ => json!({ "i": i, "t": unix_micros(), "pad": pad }),
            };
            let reply = publisher
                .start("publish", json!({ "channel": channel_name, "data": data }))
                .await?;
            pending.push(reply);
        }
        while let Some(reply) = pending.next().await {
            check(Some(reply))?;
        }
        Ok::<_, String>(())
    });

    let mut histogram = Histogram::<u64>::new(3)?;
    let mut next = 0u64;
    while (next as usize) < n {
        let push = subscriber
            .next_push(Duration::from_secs(30))
            .await
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("after {next} deliveries"))?;
        let now = unix_micros();
        let data = &push["data"];
        if data["i"].as_u64() != Some(next) {
            bail!("out of order: expected {next}, got {push}");
        }
        let sent = data["t"].as_u64().context("timestamp")?;
        histogram.record(now.saturating_sub(sent).max(1))?;
        next += 1;
    }
    let elapsed = started.elapsed();
    sender.await?.map_err(anyhow::Error::msg)?;
    Ok(RunResult {
        per_second: n as f64 / elapsed.as_secs_f64(),
        p50_us: histogram.value_at_quantile(0.50),
        p99_us: histogram.value_at_quantile(0.99),
        max_us: histogram.max(),
    })
}

/// Fails unless a publish reply arrived and succeeded.
fn check(
    reply: Option<Result<serde_json::Value, tokio::sync::oneshot::error::RecvError>>,
) -> Result<(), String> {
    match reply {
        Some(Ok(reply)) if reply.get("result").is_some() => Ok(()),
        Some(Ok(reply)) => Err(format!("publish refused: {reply}")),
        Some(Err(_)) | None => Err("connection closed before a reply".into()),
    }
}

fn report(scenario: &str, run: usize, r: &RunResult) {
    println!(
        "{scenario:>10} run {}: {:>9.0} msg/s  p50 {:>7} µs  p99 {:>7} µs  max {:>7} µs",
        run + 1,
        r.per_second,
        r.p50_us,
        r.p99_us,
        r.max_us
    );
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

fn summary(name: &str, results: &[RunResult]) {
    let rate = median(results.iter().map(|r| r.per_second).collect());
    let p50 = median(results.iter().map(|r| r.p50_us as f64).collect());
    let p99 = median(results.iter().map(|r| r.p99_us as f64).collect());
    println!(
        "median of {} runs, {name}: {rate:.0} msg/s, p50 {p50:.0} µs, p99 {p99:.0} µs",
        results.len()
    );
}
