//! A round-robin HTTP load balancer with no sticky sessions, as a plain cloud load
//! balancer in front of gateways would be.
//!
//! Every HTTP request goes to the next backend, even on a kept-alive client connection,
//! so the GETs and POSTs of one long-polling session land on different gateways. A
//! WebSocket upgrade stays on the backend it reached. Backends that refuse connections
//! (a killed gateway) are skipped, and a test can change the set of backends at any time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Largest request or response head read.
const MAX_HEAD: usize = 64 * 1024;

#[derive(Default)]
struct Backends {
    addrs: Mutex<Vec<SocketAddr>>,
    next: AtomicUsize,
}

impl Backends {
    /// Connects to the next backend that accepts, in round-robin order.
    async fn connect(&self) -> Option<TcpStream> {
        let addrs = self.addrs.lock().unwrap().clone();
        for _ in 0..addrs.len() {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % addrs.len();
            if let Ok(stream) = TcpStream::connect(addrs[i]).await {
                return Some(stream);
            }
        }
        None
    }
}

pub struct Balancer {
    addr: SocketAddr,
    backends: Arc<Backends>,
    task: JoinHandle<()>,
}

impl Balancer {
    /// Starts balancing over `backends` on a free loopback port.
    pub async fn start(backends: &[SocketAddr]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Backends::default());
        *shared.addrs.lock().unwrap() = backends.to_vec();
        let accept = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                tokio::spawn(serve(client, accept.clone()));
            }
        });
        Self {
            addr,
            backends: shared,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends new requests to these backends only.
    pub fn set_backends(&self, backends: &[SocketAddr]) {
        *self.backends.addrs.lock().unwrap() = backends.to_vec();
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one client connection, one request at a time.
async fn serve(mut client: TcpStream, backends: Arc<Backends>) {
    let mut buffer = Vec::new();
    loop {
        let Some(request) = read_message(&mut client, &mut buffer, Kind::Request).await else {
            return;
        };
        let Some(mut backend) = backends.connect().await else {
            let _ = client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                .await;
            return;
        };
        let _ = backend.set_nodelay(true);
        if backend.write_all(&request.bytes).await.is_err() {
            return;
        }
        if request.upgrade {
            // A WebSocket: from now on both directions are piped as they are.
            if backend.write_all(&buffer).await.is_err() {
                return;
            }
            buffer.clear();
            let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
            return;
        }
        let mut response_buffer = Vec::new();
        let Some(response) = read_message(&mut backend, &mut response_buffer, Kind::Response).await
        else {
            return;
        };
        if client.write_all(&response.bytes).await.is_err() {
            return;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    Response,
}

struct Message {
    /// The head and the body, as received.
    bytes: Vec<u8>,
    upgrade: bool,
}

/// Reads one HTTP/1.1 message (head, and a body of `content-length` bytes); bytes read
/// beyond it stay in `buffer`.
async fn read_message(stream: &mut TcpStream, buffer: &mut Vec<u8>, kind: Kind) -> Option<Message> {
    let (head_len, content_length, upgrade) = loop {
        if let Some(parsed) = parse_head(buffer, kind) {
            break parsed;
        }
        if buffer.len() > MAX_HEAD || read_more(stream, buffer).await == 0 {
            return None;
        }
    };
    while buffer.len() < head_len + content_length {
        if read_more(stream, buffer).await == 0 {
            return None;
        }
    }
    let bytes: Vec<u8> = buffer.drain(..head_len + content_length).collect();
    Some(Message { bytes, upgrade })
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk).await {
        Ok(n) => {
            buffer.extend_from_slice(&chunk[..n]);
            n
        }
        Err(_) => 0,
    }
}

/// The head's length, the body's length and whether the message switches protocols, once
/// the whole head is in `buffer`.
fn parse_head(buffer: &[u8], kind: Kind) -> Option<(usize, usize, bool)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let (status, headers) = match kind {
        Kind::Request => {
            let mut request = httparse::Request::new(&mut headers);
            let status = request.parse(buffer).ok()?;
            (status, request.headers.to_vec())
        }
        Kind::Response => {
            let mut response = httparse::Response::new(&mut headers);
            let status = response.parse(buffer).ok()?;
            (status, response.headers.to_vec())
        }
    };
    let httparse::Status::Complete(head_len) = status else {
        return None;
    };
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).to_string())
    };
    let content_length = header("content-length")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let upgrade = kind == Kind::Request && header("upgrade").is_some();
    Some((head_len, content_length, upgrade))
}
