//! `heraldctl` as an operator runs it: against a real standalone node (the `herald` binary
//! built beside it), and the local helpers.

use std::path::PathBuf;
use std::process::{Command, Output};

use herald_testkit::{HeraldProcess, NativeClient};
use serde_json::{Value, json};

/// Generous bound for anything that should happen quickly, on a loaded 2-core machine.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(20);

fn heraldctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_heraldctl"))
        .args(args)
        .env_remove("HERALDCTL_URL")
        .env_remove("HERALDCTL_KEY")
        .output()
        .expect("run heraldctl")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "heraldctl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The `herald` binary of the same build (`cargo nextest run --workspace` builds it).
fn herald() -> PathBuf {
    let ctl = PathBuf::from(env!("CARGO_BIN_EXE_heraldctl"));
    let herald = ctl.with_file_name("herald");
    assert!(herald.is_file(), "{} is not built", herald.display());
    herald
}

fn standalone(env: &[(&str, &str)]) -> HeraldProcess {
    let args = ["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"];
    HeraldProcess::spawn_with_env("standalone", herald(), &args, env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drives_a_node_through_the_server_api() {
    let node = standalone(&[("HERALD_API__KEY", "k3y")]);
    let url = format!("http://{}", node.api_addr());
    let api = |args: &[&str]| {
        let mut all = vec!["--url", url.as_str(), "--key", "k3y"];
        all.extend(args);
        heraldctl(&all)
    };
    let subscriber = NativeClient::connect(&node.ws_url()).await.unwrap();
    subscriber
        .ok("subscribe", json!({ "channel": "news" }))
        .await
        .unwrap();

    let published = stdout(&api(&["--json", "publish", "news", r#"{"text":"hi"}"#]));
    let published: Value = serde_json::from_str(&published).unwrap();
    assert_eq!(published["offset"], 1, "{published}");
    let push = subscriber
        .next_push(std::time::Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(push["data"], json!({ "text": "hi" }));

    let history = stdout(&api(&["--json", "history", "news"]));
    let history: Value = serde_json::from_str(&history).unwrap();
    assert_eq!(history["publications"][0]["data"], json!({ "text": "hi" }));
    let table = stdout(&api(&["channels"]));
    assert!(table.starts_with("CHANNEL"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().eq(["news", "1"])),
        "{table}"
    );
    let info = stdout(&api(&["--json", "info"]));
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info[0]["kind"], "standalone", "{info}");

    // Refusals exit non-zero with the reason.
    let wrong = heraldctl(&["--url", &url, "--key", "nope", "info"]);
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("API key"),
        "{wrong:?}"
    );
    let invalid = api(&["publish", "news", "not json"]);
    assert!(!invalid.status.success());
    assert!(
        String::from_utf8_lossy(&invalid.stderr).contains("JSON"),
        "{invalid:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_patches_and_deletes_sync_documents() {
    let node = standalone(&[
        ("HERALD_API__KEY", "k3y"),
        ("HERALD_CHANNELS__NAMESPACES__DEVICE__SYNC", "true"),
    ]);
    let url = format!("http://{}", node.api_addr());
    let api = |args: &[&str]| {
        let mut all = vec!["--url", url.as_str(), "--key", "k3y", "--json", "sync"];
        all.extend(args);
        heraldctl(&all)
    };
    let json = |output: Output| serde_json::from_str::<Value>(&stdout(&output)).unwrap();
    let watcher = NativeClient::connect(&node.ws_url()).await.unwrap();
    watcher
        .ok("sync_subscribe", json!({ "channel": "device:7" }))
        .await
        .unwrap();

    let patched = json(api(&[
        "patch",
        "device:7",
        r#"{"status":"online","battery":80}"#,
    ]));
    assert_eq!(patched["rev"], 1, "{patched}");
    let patched = json(api(&[
        "patch",
        "device:7",
        r#"{"battery":null}"#,
        "--base-rev",
        "1",
    ]));
    assert_eq!(patched["rev"], 2, "{patched}");
    let got = json(api(&["get", "device:7"]));
    assert_eq!(got["doc"], json!({ "status": "online" }), "{got}");
    assert_eq!(got["rev"], 2, "{got}");
    let push = watcher
        .next_push(std::time::Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        push["patch"],
        json!({ "status": "online", "battery": 80 }),
        "{push}"
    );

    // A patch on a revision that is gone is refused and says where the document is.
    let conflict = api(&["patch", "device:7", r#"{"status":"x"}"#, "--base-rev", "1"]);
    assert!(!conflict.status.success());
    let reason = String::from_utf8_lossy(&conflict.stderr);
    assert!(reason.contains("revision 2"), "{reason}");

    let deleted = json(api(&["delete", "device:7"]));
    assert_eq!(deleted["rev"], 0, "{deleted}");
    let got = json(api(&["get", "device:7"]));
    assert_eq!(got["doc"], json!({}), "{got}");
}

#[test]
fn makes_tokens_and_checks_configs() {
    let token = stdout(&heraldctl(&[
        "token",
        "alice",
        "--secret",
        "s3cret",
        "--ttl",
        "10m",
        "--info",
        r#"{"name":"A"}"#,
        "--grant",
        "vip:*",
    ]));
    let key = jsonwebtoken::DecodingKey::from_secret(b"s3cret");
    let claims =
        jsonwebtoken::decode::<Value>(token.trim(), &key, &jsonwebtoken::Validation::default())
            .unwrap()
            .claims;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["info"], json!({ "name": "A" }));
    assert_eq!(claims["channels"], json!(["vip:*"]));

    let example = stdout(&heraldctl(&["config", "example"]));
    herald_core::config::Config::from_toml(&example).expect("the example is a valid config");

    let dir = env!("CARGO_TARGET_TMPDIR");
    let good = format!("{dir}/heraldctl-good.toml");
    std::fs::write(&good, "[gateway]\nlisten = \"127.0.0.1:4000\"\n").unwrap();
    stdout(&heraldctl(&["config", "check", &good]));
    let bad = format!("{dir}/heraldctl-bad.toml");
    std::fs::write(&bad, "[gateway]\nlisten_addr = \"x\"\n").unwrap();
    let checked = heraldctl(&["config", "check", &bad]);
    assert!(!checked.status.success());
    assert!(
        String::from_utf8_lossy(&checked.stderr).contains("listen_addr"),
        "{checked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drains_one_named_gateway_and_lists_its_connections() {
    let settings = [
        ("HERALD_API__KEY", "k3y"),
        ("HERALD_AUTH__HMAC_SECRET", "s3cret"),
        ("HERALD_NODE__HEARTBEAT", "300ms"),
        ("HERALD_GATEWAY__DRAIN_PERIOD", "1s"),
    ];
    let cluster = herald_testkit::Cluster::start(herald(), 2, 1, &settings);
    let url = format!("http://{}", cluster.routers[0].api_addr());
    let api = |args: &[&str]| {
        let mut all = vec!["--url", url.as_str(), "--key", "k3y"];
        all.extend(args);
        heraldctl(&all)
    };
    let nodes = |output: &Output| -> Vec<(String, bool)> {
        let listed: Value = serde_json::from_str(&stdout(output)).unwrap();
        let nodes = listed.as_array().unwrap().iter();
        let gateways = nodes.filter(|n| n["kind"] == "gateway" && n["control"] != "");
        gateways
            .map(|n| (n["id"].as_str().unwrap().to_string(), n["draining"] == true))
            .collect()
    };
    let serving = |n: &str| (n.to_string(), false);
    let both = vec![serving("gateway-1"), serving("gateway-2")];
    let listed = herald_testkit::wait_for(PATIENCE, || {
        nodes(&api(&["--json", "node", "list"])) == both
    });
    assert!(listed, "node list did not show both gateways");

    let token = |user: &str| {
        let args = ["token", user, "--secret", "s3cret"];
        stdout(&heraldctl(&args)).trim().to_string()
    };
    let mut clients = Vec::new();
    for (gateway, user) in [(0, "alice"), (1, "bob"), (1, "carol")] {
        let client = NativeClient::open(&cluster.ws_url(gateway)).await.unwrap();
        let connected = client
            .ok("connect", json!({ "token": token(user) }))
            .await
            .unwrap();
        clients.push((client, connected["client"].as_str().unwrap().to_string()));
    }

    let listed = stdout(&api(&["--json", "node", "connections", "gateway-2"]));
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let mut expected = vec![
        json!({ "client": clients[1].1, "user": "bob" }),
        json!({ "client": clients[2].1, "user": "carol" }),
    ];
    expected.sort_by_key(|c| c["client"].as_str().unwrap().to_string());
    assert_eq!(listed["connections"], json!(expected), "{listed}");
    let bobs = stdout(&api(&[
        "--json",
        "node",
        "connections",
        "gateway-2",
        "--user",
        "bob",
    ]));
    let bobs: Value = serde_json::from_str(&bobs).unwrap();
    assert_eq!(bobs["connections"].as_array().unwrap().len(), 1, "{bobs}");
    assert_eq!(bobs["connections"][0]["user"], "bob", "{bobs}");

    let drained = stdout(&api(&["--json", "node", "drain", "gateway-2"]));
    let drained: Value = serde_json::from_str(&drained).unwrap();
    assert_eq!(drained["draining"], true, "{drained}");
    // Its clients are sent away to reconnect elsewhere; the other gateway's stay.
    for (client, _) in &clients[1..] {
        let closed = client
            .closed(PATIENCE)
            .await
            .unwrap()
            .expect("a close frame");
        assert_eq!(closed.code, 3000, "{closed:?}");
    }
    let ready = |i: usize| herald_testkit::node::http_status(cluster.gateways[i].addr(), "/readyz");
    assert_eq!(ready(1), Some(503));
    assert_eq!(ready(0), Some(200));
    let alice = &clients[0].0;
    alice
        .ok("subscribe", json!({ "channel": "news" }))
        .await
        .unwrap();
    let expected = vec![serving("gateway-1"), ("gateway-2".to_string(), true)];
    let shown = herald_testkit::wait_for(PATIENCE, || {
        nodes(&api(&["--json", "node", "list"])) == expected
    });
    assert!(shown, "node list did not show the drain");
    let info = stdout(&api(&["node", "info", "gateway-2"]));
    assert!(
        info.lines().nth(1).is_some_and(|l| l.contains("draining")),
        "{info}"
    );

    // A router has no clients to drain; an unknown node is not found.
    let router = api(&["node", "drain", "router-1"]);
    assert!(!router.status.success());
    assert!(
        String::from_utf8_lossy(&router.stderr).contains("FailedPrecondition"),
        "{router:?}"
    );
    let unknown = api(&["node", "info", "gateway-9"]);
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("NotFound"),
        "{unknown:?}"
    );
}
