//! The three protocols the comparison speaks, each over a WebSocket as a stock client
//! would: Socket.IO (Engine.IO v4 frames, to Herald or to the Socket.IO-Node cluster),
//! Herald's native JSON protocol, and the NATS client protocol (to `nats-server`'s
//! websocket listener).
//!
//! Every system is asked the same three things: open a connection, put it in a room (a
//! Socket.IO room, a Herald channel, a NATS subject), and send a payload to a room. A
//! connection then runs as one task ([`Link`]) that writes what it is given, answers the
//! server's keep-alives, and hands every payload it receives to a [`Tally`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use herald_core::time::unix_micros;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use super::tally::{Stamp, Tally};

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Bytes of every payload, marker and padding included.
pub const PAYLOAD_BYTES: usize = 100;

/// How long a handshake step may take before the connection counts as failed.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    SocketIo,
    Native,
    Nats,
}

/// A payload: `~emitter.seq.sent_us.` and padding, 100 bytes of ASCII that no protocol
/// escapes, so a receiver finds it in any frame by its `~`.
pub fn payload(emitter: u32, seq: u64) -> String {
    let mut text = format!("~{emitter}.{seq}.{}.", unix_micros());
    let pad = PAYLOAD_BYTES.saturating_sub(text.len());
    text.extend(std::iter::repeat_n('x', pad));
    text
}

/// Every payload marker in `frame`.
pub fn stamps(frame: &[u8]) -> impl Iterator<Item = Stamp> + '_ {
    frame
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'~')
        .filter_map(|(at, _)| {
            let mut fields = frame[at + 1..].split(|b| *b == b'.');
            let mut number =
                || -> Option<u64> { std::str::from_utf8(fields.next()?).ok()?.parse().ok() };
            Some(Stamp {
                emitter: u32::try_from(number()?).ok()?,
                seq: number()?,
                sent_us: number()?,
            })
        })
}

impl Dialect {
    fn url(self, addr: SocketAddr) -> String {
        match self {
            Self::SocketIo => format!("ws://{addr}/socket.io/?EIO=4&transport=websocket"),
            Self::Native => format!("ws://{addr}/connection/websocket"),
            Self::Nats => format!("ws://{addr}"),
        }
    }

    /// The frame that sends `payload` to `room`. `id` numbers native commands.
    pub fn publish(self, room: &str, payload: &str, id: u64) -> Message {
        match self {
            Self::SocketIo => Message::text(format!(r#"42["to","{room}","m","{payload}"]"#)),
            Self::Native => Message::text(format!(
                r#"{{"id":{id},"method":"publish","params":{{"channel":"{room}","data":"{payload}"}}}}"#
            )),
            Self::Nats => Message::binary(Bytes::from(format!(
                "PUB {room} {}\r\n{payload}\r\n",
                payload.len()
            ))),
        }
    }

    /// Opens a connection and completes the protocol's handshake.
    pub async fn open(self, addr: SocketAddr) -> anyhow::Result<Ws> {
        self.open_from(None, addr, None).await
    }

    /// Like [`Self::open`], signed in with `token` (Herald's dialects only).
    pub async fn open_as(self, addr: SocketAddr, token: &str) -> anyhow::Result<Ws> {
        self.connect(None, addr, None, Some(token)).await
    }

    /// Like [`Self::open`], from the local address `source` if given (each loopback
    /// address, 127.0.0.x, has its own ephemeral ports, so more connections fit), with
    /// WebSocket settings of its own if given.
    pub async fn open_from(
        self,
        source: Option<IpAddr>,
        addr: SocketAddr,
        config: Option<WebSocketConfig>,
    ) -> anyhow::Result<Ws> {
        self.connect(source, addr, config, None).await
    }

    async fn connect(
        self,
        source: Option<IpAddr>,
        addr: SocketAddr,
        config: Option<WebSocketConfig>,
        token: Option<&str>,
    ) -> anyhow::Result<Ws> {
        let tcp = tokio::time::timeout(STEP_TIMEOUT, async {
            match source {
                None => tokio::net::TcpStream::connect(addr).await,
                Some(ip) => {
                    let socket = tokio::net::TcpSocket::new_v4()?;
                    bind_without_port(&socket)?;
                    socket.bind(SocketAddr::new(ip, 0))?;
                    socket.connect(addr).await
                }
            }
        })
        .await
        .context("TCP connect timed out")?
        .context("TCP connect")?;
        // Without TCP_NODELAY, Nagle's algorithm meeting delayed ACKs holds frames ~40 ms.
        tcp.set_nodelay(true)?;
        if source.is_some() {
            // Connections from addresses of their own are a crowd's: closed with a reset,
            // each would otherwise hold its local port for a minute (TIME_WAIT), and the
            // next run would find none free.
            tcp.set_zero_linger()?;
        }
        let stream = tokio_tungstenite::MaybeTlsStream::Plain(tcp);
        let (mut ws, _) = tokio::time::timeout(
            STEP_TIMEOUT,
            tokio_tungstenite::client_async_with_config(self.url(addr), stream, config),
        )
        .await
        .context("WebSocket handshake timed out")??;
        match self {
            Self::SocketIo => {
                until(&mut ws, |text| text.starts_with('0')).await?;
                let connect = match token {
                    Some(token) => format!(r#"40{{"token":"{token}"}}"#),
                    None => "40".to_string(),
                };
                ws.send(Message::text(connect)).await?;
                until(&mut ws, |text| text.starts_with("40")).await?;
            }
            Self::Native => {
                let params = match token {
                    Some(token) => format!(r#"{{"token":"{token}"}}"#),
                    None => "{}".to_string(),
                };
                let connect = format!(r#"{{"id":1,"method":"connect","params":{params}}}"#);
                ws.send(Message::text(connect)).await?;
                expect_reply(&mut ws, 1).await?;
            }
            Self::Nats => {
                until(&mut ws, |text| text.starts_with("INFO")).await?;
                let connect =
                    "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\nPING\r\n";
                ws.send(Message::binary(Bytes::from(connect))).await?;
                until(&mut ws, |text| text.contains("PONG")).await?;
            }
        }
        Ok(ws)
    }

    /// Puts the connection in `room` and waits until the server confirmed it.
    pub async fn join(self, ws: &mut Ws, room: &str) -> anyhow::Result<()> {
        match self {
            Self::SocketIo => {
                ws.send(Message::text(format!(r#"421["join","{room}"]"#)))
                    .await?;
                let ack = until(ws, |text| text.starts_with("431")).await?;
                if ack.contains("error") {
                    bail!("join refused: {ack}");
                }
            }
            Self::Native => {
                ws.send(Message::text(format!(
                    r#"{{"id":2,"method":"subscribe","params":{{"channel":"{room}"}}}}"#
                )))
                .await?;
                expect_reply(ws, 2).await?;
            }
            Self::Nats => {
                let sub = format!("SUB {room} 1\r\nPING\r\n");
                ws.send(Message::binary(Bytes::from(sub))).await?;
                until(ws, |text| text.contains("PONG")).await?;
            }
        }
        Ok(())
    }
}

/// Lets `connect` pick the local port of a socket bound to an address: a `bind` to port
/// 0 would reserve one port for every destination, searching the bound ports each
/// time (which made opening the 50,000th connection 10× slower than the first), while
/// `connect` needs the port free only towards its one destination.
#[cfg(target_os = "linux")]
fn bind_without_port(socket: &tokio::net::TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: the descriptor is the socket's own and open; the option value is a c_int
    // that outlives the call, and its size is passed with it.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match done {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Elsewhere the option does not exist, and binding searches as it does.
#[cfg(not(target_os = "linux"))]
fn bind_without_port(_: &tokio::net::TcpSocket) -> std::io::Result<()> {
    Ok(())
}

/// Reads until a text (or binary) frame satisfies `done`, answering keep-alives.
async fn until(ws: &mut Ws, done: impl Fn(&str) -> bool) -> anyhow::Result<String> {
    loop {
        let frame = tokio::time::timeout(STEP_TIMEOUT, ws.next())
            .await
            .context("no answer from the server")?
            .context("connection closed")??;
        let text = match frame {
            Message::Text(text) => text.to_string(),
            Message::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            _ => continue,
        };
        if text.starts_with("-ERR") {
            bail!("server error: {text}");
        }
        if done(&text) {
            return Ok(text);
        }
    }
}

/// Waits for the native reply `id` and fails unless it has a result.
pub async fn expect_reply(ws: &mut Ws, id: u64) -> anyhow::Result<()> {
    let prefix = format!(r#"{{"id":{id},"#);
    let reply = until(ws, |text| text.starts_with(&prefix)).await?;
    if !reply.contains(r#""result""#) {
        bail!("refused: {reply}");
    }
    Ok(())
}

/// A connection running as a task: frames sent into it are written in order (those that
/// queue up while it writes go out in one flush), and what it receives goes to its tally.
/// Dropping the sender ends the task, which returns the tally.
pub struct Link {
    pub tx: mpsc::UnboundedSender<Message>,
    task: JoinHandle<anyhow::Result<Tally>>,
}

impl Link {
    pub fn spawn(dialect: Dialect, ws: Ws, tally: Tally) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(dialect, ws, rx, tally));
        Self { tx, task }
    }

    /// Stops the connection and returns what it received.
    pub async fn finish(self) -> anyhow::Result<Tally> {
        drop(self.tx);
        self.task.await?
    }
}

async fn drive(
    dialect: Dialect,
    mut ws: Ws,
    mut rx: mpsc::UnboundedReceiver<Message>,
    mut tally: Tally,
) -> anyhow::Result<Tally> {
    // NATS may split a message over frames: the bytes after the last complete one wait here.
    let mut partial = Vec::new();
    loop {
        tokio::select! {
            biased;
            frame = ws.next() => {
                // A server may cut a connection (a slow consumer, say): that is a result to
                // report, with what the connection missed counted as lost, not a failure of
                // the run.
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(_)) | None => return Ok(tally.cut()),
                };
                let bytes: &[u8] = match &frame {
                    Message::Text(text) => text.as_bytes(),
                    Message::Binary(bytes) => bytes,
                    Message::Close(_) => return Ok(tally.cut()),
                    _ => continue,
                };
                let now = unix_micros();
                match dialect {
                    Dialect::SocketIo if bytes == b"2" => ws.send(Message::text("3")).await?,
                    Dialect::Native if bytes.starts_with(br#"{"id""#) => {
                        if bytes.windows(8).any(|w| w == br#""error":"#) {
                            tally.refused += 1;
                        }
                    }
                    Dialect::Nats => {
                        partial.extend_from_slice(bytes);
                        let (pings, used) = nats_messages(&partial, |stamp| tally.record(stamp, now));
                        partial.drain(..used);
                        for _ in 0..pings {
                            ws.send(Message::binary(Bytes::from_static(b"PONG\r\n"))).await?;
                        }
                    }
                    _ => stamps(bytes).for_each(|stamp| tally.record(stamp, now)),
                }
                tally.frame_done(now);
            }
            out = rx.recv() => {
                let Some(out) = out else { break };
                ws.feed(out).await?;
                while let Ok(more) = rx.try_recv() {
                    ws.feed(more).await?;
                }
                ws.flush().await?;
            }
        }
    }
    let _ = ws.close(None).await;
    Ok(tally)
}

/// Parses the complete NATS protocol lines in `buffer`, handing every payload's stamp to
/// `each`; returns the PINGs to answer and the bytes consumed.
fn nats_messages(buffer: &[u8], mut each: impl FnMut(Stamp)) -> (usize, usize) {
    let (mut pings, mut at) = (0, 0);
    while let Some(end) = find_crlf(&buffer[at..]) {
        let line = &buffer[at..at + end];
        let mut next = at + end + 2;
        if line.starts_with(b"MSG ") {
            let size: Option<usize> = line
                .rsplit(|b| *b == b' ')
                .next()
                .and_then(|n| std::str::from_utf8(n).ok()?.parse().ok());
            let Some(size) = size else { break };
            if buffer.len() < next + size + 2 {
                break;
            }
            stamps(&buffer[next..next + size]).for_each(&mut each);
            next += size + 2;
        } else if line == b"PING" {
            pings += 1;
        }
        at = next;
    }
    (pings, at)
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_found_in_any_frame() {
        let text = payload(7, 42);
        assert_eq!(text.len(), PAYLOAD_BYTES);
        let frame = format!(r#"42["m","{text}"]"#);
        let found: Vec<Stamp> = stamps(frame.as_bytes()).collect();
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].emitter, found[0].seq), (7, 42));
    }

    #[test]
    fn nats_messages_wait_for_their_whole_payload() {
        let text = payload(1, 2);
        let frame = format!(
            "MSG room 1 {}\r\n{text}\r\nPING\r\nMSG room 1 100\r\n~1.3",
            text.len()
        );
        let mut found = Vec::new();
        let (pings, used) = nats_messages(frame.as_bytes(), |s| found.push(s.seq));
        assert_eq!((found, pings), (vec![2], 1));
        assert!(frame[used..].starts_with("MSG room 1 100"));
    }
}
