//! A TCP relay whose server-to-client direction has a fixed latency, so that a test can
//! hold messages in flight for as long as it needs: what a server sent before it read a
//! client's command is still on its way when the client acts on that command.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Relays connections on a free loopback port to one server; dropped, it stops
/// accepting (relayed connections end with their peers).
pub struct SlowLink {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl SlowLink {
    /// Relays to `server`, delivering each chunk the server sends `latency` after it
    /// arrived; the client's direction goes through at once.
    pub async fn start(server: SocketAddr, latency: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if let Ok(upstream) = TcpStream::connect(server).await {
                    relay(client, upstream, latency);
                }
            }
        });
        Self { addr, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn relay(client: TcpStream, upstream: TcpStream, latency: Duration) {
    let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
    let (mut from_client, to_client) = client.into_split();
    let (from_server, mut to_server) = upstream.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
    });
    let (chunks, delayed) = mpsc::unbounded_channel();
    tokio::spawn(read_stamped(from_server, chunks));
    tokio::spawn(write_late(delayed, to_client, latency));
}

/// Reads what the server sends, each chunk stamped with when it came.
async fn read_stamped(mut from: OwnedReadHalf, chunks: mpsc::UnboundedSender<(Instant, Vec<u8>)>) {
    let mut buffer = vec![0; 64 * 1024];
    while let Ok(read @ 1..) = from.read(&mut buffer).await {
        if chunks
            .send((Instant::now(), buffer[..read].to_vec()))
            .is_err()
        {
            return;
        }
    }
}

/// Writes each chunk `latency` after it came, in order.
async fn write_late(
    mut chunks: mpsc::UnboundedReceiver<(Instant, Vec<u8>)>,
    mut to: OwnedWriteHalf,
    latency: Duration,
) {
    while let Some((came, chunk)) = chunks.recv().await {
        tokio::time::sleep_until(came + latency).await;
        if to.write_all(&chunk).await.is_err() {
            return;
        }
    }
}
