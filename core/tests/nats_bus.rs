//! The NATS implementation of the bus against a real `nats-server`.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use herald_core::bus::{Bus, BusError, NatsBus, Subscription};
use herald_core::config::NatsConfig;
use herald_testkit::scratch::Scratch;
use herald_testkit::{Server, SlowLink, TlsFiles};

const WAIT: Duration = Duration::from_secs(10);

async fn connect(server: &Server, name: &str) -> NatsBus {
    connect_to(&server.url(), name).await
}

async fn connect_to(url: &str, name: &str) -> NatsBus {
    let bus = NatsBus::connect_url(url, name).await.unwrap();
    assert!(bus.wait_connected(WAIT).await, "{name} connects");
    bus
}

/// Joins queue group `g` on subject `work`, live on the server once this returns.
async fn join_work(bus: &NatsBus) -> Subscription {
    let subscription = bus
        .queue_subscribe("work".into(), "g".into())
        .await
        .unwrap();
    bus.flush().await.unwrap();
    subscription
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_flush_a_subscription_sees_every_later_publication() {
    let server = Server::nats();
    let subscriber = connect(&server, "subscriber").await;
    let publisher = connect(&server, "publisher").await;
    // A publication from another connection, sent right after the flush, must never pass
    // the subscription by: this is what "subscribed" means to a client.
    for i in 0..200 {
        let subject = format!("t.{i}");
        let mut subscription = subscriber.subscribe(subject.clone()).await.unwrap();
        subscriber.flush().await.unwrap();
        publisher
            .publish(subject, Bytes::from(vec![1]))
            .await
            .unwrap();
        let received = tokio::time::timeout(WAIT, subscription.next()).await;
        assert!(matches!(received, Ok(Some(_))), "publication {i} was lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_responders_fail_at_once_and_outages_are_reported() {
    let mut server = Server::nats();
    let bus = connect(&server, "client").await;
    let answer = bus.request("nobody.home".into(), Bytes::new(), WAIT).await;
    assert_eq!(answer, Err(BusError::NoResponders));

    let mut connections = bus.connections();
    connections.mark_unchanged();
    server.stop();
    assert!(
        herald_testkit::wait_for_async(WAIT, || async { !bus.is_connected() }).await,
        "the bus notices the outage"
    );
    assert_eq!(
        bus.publish("x".into(), Bytes::new()).await,
        Err(BusError::NotConnected),
        "publishes are refused, not buffered, while disconnected"
    );
    server.restart();
    tokio::time::timeout(WAIT * 2, connections.changed())
        .await
        .expect("a reconnection is reported")
        .unwrap();
    assert!(bus.is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_queue_member_yields_what_it_received_and_the_rest_go_to_the_others() {
    let server = Server::nats();
    let leaving = connect(&server, "leaving").await;
    let staying = connect(&server, "staying").await;
    let publisher = connect(&server, "publisher").await;
    let mut left = join_work(&leaving).await;
    for i in 0..20u8 {
        publisher
            .publish("work".into(), Bytes::from(vec![i]))
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    let mut stays = join_work(&staying).await;
    left.drainer().drain();
    // Everything sent while it was the only member comes out of it, then its stream ends.
    let received =
        tokio::time::timeout(WAIT, (&mut left).map(|m| m.payload[0]).collect::<Vec<_>>())
            .await
            .expect("the drained stream ends");
    assert_eq!(received, (0..20).collect::<Vec<u8>>());
    // Once it has ended, every new message reaches the member that stays.
    for i in 20..30u8 {
        publisher
            .publish("work".into(), Bytes::from(vec![i]))
            .await
            .unwrap();
    }
    for i in 20..30u8 {
        let message = tokio::time::timeout(WAIT, stays.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(message.payload[0], i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_member_drained_while_messages_are_in_flight_loses_none() {
    const SENT: u32 = 2_000;
    let server = Server::nats();
    // What the server sends the leaving member takes 50 ms to arrive: when it drains,
    // messages the server sent before it read the UNSUB are still on their way, and
    // must come out of the drained stream.
    let link = SlowLink::start(server.addr(), Duration::from_millis(50)).await;
    let leaving = connect_to(&format!("nats://{}", link.addr()), "leaving").await;
    let staying = connect(&server, "staying").await;
    let publisher = connect(&server, "publisher").await;
    let mut left = join_work(&leaving).await;
    let mut stays = join_work(&staying).await;
    let publishing = tokio::spawn(async move {
        for i in 0..SENT {
            let payload = Bytes::copy_from_slice(&i.to_be_bytes());
            publisher.publish("work".into(), payload).await.unwrap();
            // Spread over a fifth of a second, longer than the link's latency.
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        publisher.flush().await.unwrap();
    });
    let drainer = left.drainer();
    let leaving_member = tokio::spawn(async move {
        let mut received = Vec::new();
        while let Some(message) = left.next().await {
            received.push(number(&message.payload));
            if received.len() == 50 {
                drainer.drain();
            }
            // Answering, as a router does, keeps its client busy while the drain is on.
            leaving
                .publish("answers".into(), message.payload)
                .await
                .unwrap();
        }
        received
    });
    publishing.await.unwrap();
    let mut received = tokio::time::timeout(WAIT, leaving_member)
        .await
        .expect("the drained stream ends")
        .unwrap();
    while received.len() < SENT as usize {
        match tokio::time::timeout(WAIT, stays.next()).await {
            Ok(Some(message)) => received.push(number(&message.payload)),
            _ => break,
        }
    }
    received.sort_unstable();
    let delivered = received.len();
    received.dedup();
    assert_eq!(delivered, received.len(), "some messages came twice");
    assert_eq!(
        received.len(),
        SENT as usize,
        "{} messages lost",
        SENT as usize - received.len()
    );
}

fn number(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload.try_into().expect("a four-byte payload"))
}

/// A publication from `bus` to itself arrives: the connection works.
async fn round_trip(bus: &NatsBus) {
    let mut subscription = bus.subscribe("echo".into()).await.unwrap();
    bus.flush().await.unwrap();
    bus.publish("echo".into(), Bytes::from_static(b"hi"))
        .await
        .unwrap();
    let received = tokio::time::timeout(WAIT, subscription.next()).await;
    assert!(matches!(received, Ok(Some(_))), "the publication came back");
}

/// A bus for `config`, and whether it connected within `within`.
async fn connect_with(config: NatsConfig, within: Duration) -> (NatsBus, bool) {
    let bus = NatsBus::connect(&config, "secured").await.unwrap();
    let connected = bus.wait_connected(within).await;
    (bus, connected)
}

/// How long a refused client is given to get in anyway.
const REFUSED: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_and_password_a_token_or_an_nkey_gets_in() {
    let key = nkeys::KeyPair::new_user();
    let cases = [
        (
            "authorization { user: herald, password: s3cret }".to_string(),
            NatsConfig {
                user: "herald".into(),
                password: "s3cret".into(),
                ..NatsConfig::default()
            },
        ),
        (
            "authorization { token: t0ken-for-tests }".to_string(),
            NatsConfig {
                token: "t0ken-for-tests".into(),
                ..NatsConfig::default()
            },
        ),
        (
            format!(
                "authorization {{ users: [ {{ nkey: {} }} ] }}",
                key.public_key()
            ),
            NatsConfig {
                nkey_seed: key.seed().unwrap(),
                ..NatsConfig::default()
            },
        ),
    ];
    for (server_config, client) in cases {
        let server = Server::nats_with_config(&server_config);
        let config = NatsConfig {
            url: server.url(),
            ..client
        };
        let (bus, connected) = connect_with(config, WAIT).await;
        assert!(connected, "{server_config}");
        round_trip(&bus).await;
    }
}

/// A `.creds` file as `nsc` writes one: the user's JWT, then its NKey seed.
fn creds(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creds_file_of_an_operators_account_gets_in() {
    use nats_jwt::{KeyPair, Token};
    // Operator mode, as with nsc: the server trusts an operator, which signed the account,
    // which signed the user whose JWT and seed the .creds file holds.
    let operator = KeyPair::new_operator();
    let account = KeyPair::new_account();
    let account_jwt = Token::new_account(account.public_key())
        .name("herald")
        .sign(&operator);
    let user = KeyPair::new_user();
    let user_jwt = Token::new_user(account.public_key(), user.public_key())
        .name("herald-node")
        .sign(&account);
    let server = Server::nats_with_config(&format!(
        "trusted_keys: [\"{}\"]\nresolver: MEMORY\nresolver_preload: {{ {}: \"{account_jwt}\" }}",
        operator.public_key(),
        account.public_key(),
    ));
    let files = Scratch::new("nats-creds");
    let creds_file = files.write("herald.creds", &creds(&user_jwt, &user.seed().unwrap()));
    let config = NatsConfig {
        url: server.url(),
        credentials_file: TlsFiles::text(&creds_file),
        ..NatsConfig::default()
    };
    let (bus, connected) = connect_with(config, WAIT).await;
    assert!(connected, "the account's user gets in");
    round_trip(&bus).await;

    // A user that another account signed, which the operator never signed, stays out.
    let stranger = KeyPair::new_account();
    let outsider_jwt = Token::new_user(stranger.public_key(), user.public_key()).sign(&stranger);
    let outsider = files.write(
        "outsider.creds",
        &creds(&outsider_jwt, &user.seed().unwrap()),
    );
    let refused = NatsConfig {
        url: server.url(),
        credentials_file: TlsFiles::text(&outsider),
        ..NatsConfig::default()
    };
    let (_, connected) = connect_with(refused, REFUSED).await;
    assert!(!connected, "a user of an unknown account is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_nats_credentials_keep_the_node_out() {
    let server = Server::nats_with_config("authorization { user: herald, password: s3cret }");
    let wrong = NatsConfig {
        url: server.url(),
        user: "herald".into(),
        password: "guess".into(),
        ..NatsConfig::default()
    };
    let (bus, connected) = connect_with(wrong, REFUSED).await;
    assert!(
        !connected && !bus.is_connected(),
        "a wrong password is refused"
    );
    // A seed that is no seed fails at once, naming the setting.
    let bad_seed = NatsConfig {
        url: server.url(),
        nkey_seed: "not-a-seed".into(),
        ..NatsConfig::default()
    };
    let refused = NatsBus::connect(&bad_seed, "bad").await.err().unwrap();
    assert!(refused.to_string().contains("nats.nkey_seed"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_cas_of_the_config_and_a_client_certificate() {
    let tls = TlsFiles::generate("nats-tls");
    let (ca, cert, key) = (
        TlsFiles::text(&tls.ca_file),
        TlsFiles::text(&tls.cert_file),
        TlsFiles::text(&tls.key_file),
    );
    // The server verifies clients: only a certificate from the test CA gets in.
    let server = Server::nats_with_config(&format!(
        "tls {{ cert_file: \"{cert}\", key_file: \"{key}\", ca_file: \"{ca}\", verify: true }}"
    ));
    let config = NatsConfig {
        url: server.url(),
        tls_ca_file: ca.clone(),
        tls_cert_file: cert,
        tls_key_file: key,
        ..NatsConfig::default()
    };
    let (bus, connected) = connect_with(config.clone(), WAIT).await;
    assert!(connected, "a client with the CA and a certificate connects");
    round_trip(&bus).await;
    let without_certificate = NatsConfig {
        tls_cert_file: String::new(),
        tls_key_file: String::new(),
        ..config
    };
    let (_, connected) = connect_with(without_certificate, REFUSED).await;
    assert!(!connected, "the server wants a client certificate");
}
