"""A chat backend for Herald, the logic a Socket.IO app keeps in its server handlers.

- Connect hook: admits a client from its `session` cookie (sessions live in SQLite).
- Publish hook: refuses messages with a banned word, with an app error code the client sees.
- Consume stream: stores every message of `chat:*` in SQLite, with the position it reached,
  so that after a restart it goes on from there and misses nothing.
- RPC hook: `history` returns a conversation's last messages from SQLite.

Run: python backend.py --session s-alice=alice --session s-bob=bob  (see README.md)
"""

import argparse
import json
import logging
import pathlib
import re
import sqlite3
import sys
import threading
import time
from concurrent import futures

import grpc

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
GENERATED = HERE / "_generated"

BANNED = {"spam", "scam"}
# The app's own error codes (Herald passes 1000-1999 to clients as they are).
BANNED_WORD = 1001
UNKNOWN_METHOD = 1002
BAD_ARGUMENT = 1003

log = logging.getLogger("chat-backend")


def generate():
    """Compiles Herald's .proto files into _generated/ (grpcio-tools bundles protoc)."""
    import grpc_tools
    from grpc_tools import protoc

    GENERATED.mkdir(exist_ok=True)
    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    for proto in ("herald/backend/v1/backend.proto", "herald/api/v1/api.proto"):
        code = protoc.main([
            "protoc", f"-I{PROTO_ROOT}", f"-I{include}",
            f"--python_out={GENERATED}", f"--grpc_python_out={GENERATED}", proto,
        ])
        if code != 0:
            sys.exit(f"cannot compile {proto}")


generate()
sys.path.insert(0, str(GENERATED))
from herald.api.v1 import api_pb2, api_pb2_grpc  # noqa: E402
from herald.backend.v1 import backend_pb2, backend_pb2_grpc  # noqa: E402


class Store:
    """The app's database: sessions, messages, and how far the consume stream got."""

    def __init__(self, path):
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.lock = threading.Lock()
        with self.lock:
            self.db.executescript("""
                PRAGMA journal_mode = WAL;
                CREATE TABLE IF NOT EXISTS sessions (token TEXT PRIMARY KEY, user TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS messages (
                    channel TEXT, epoch TEXT, offset INTEGER, user TEXT, data TEXT, time_ms INTEGER,
                    PRIMARY KEY (channel, epoch, offset));
                CREATE TABLE IF NOT EXISTS positions (
                    channel TEXT PRIMARY KEY, epoch TEXT, offset INTEGER, time_ms INTEGER);
            """)

    def add_session(self, token, user):
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO sessions VALUES (?, ?)", (token, user))

    def user_of(self, token):
        with self.lock:
            row = self.db.execute("SELECT user FROM sessions WHERE token = ?", (token,)).fetchone()
        return row[0] if row else None

    def store(self, channel, epoch, publication):
        """Stores a message and the position after it, together: a message is stored once
        however often the stream delivers it (at least once)."""
        publisher = publication.publisher.user if publication.HasField("publisher") else ""
        with self.lock:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT OR IGNORE INTO messages VALUES (?, ?, ?, ?, ?, ?)",
                (channel, epoch, publication.offset, publisher, publication.data,
                 publication.time_ms))
            self.db.execute(
                "INSERT OR REPLACE INTO positions VALUES (?, ?, ?, ?)",
                (channel, epoch, publication.offset, publication.time_ms))
            self.db.execute("COMMIT")

    def skip_to(self, channel, epoch, offset):
        with self.lock:
            self.db.execute(
                "INSERT OR REPLACE INTO positions VALUES (?, ?, ?, "
                "COALESCE((SELECT time_ms FROM positions WHERE channel = ?), 0))",
                (channel, epoch, offset, channel))

    def positions(self):
        with self.lock:
            rows = self.db.execute("SELECT channel, epoch, offset, time_ms FROM positions")
            return rows.fetchall()

    def last_messages(self, channel, limit):
        with self.lock:
            rows = self.db.execute(
                "SELECT offset, user, data, time_ms FROM messages WHERE channel = ? "
                "ORDER BY time_ms DESC, offset DESC LIMIT ?", (channel, limit)).fetchall()
        return [{"offset": o, "user": u, "data": json.loads(d), "time_ms": t}
                for (o, u, d, t) in reversed(rows)]


def cookie(headers, name):
    for pair in headers.get("cookie", "").split(";"):
        key, _, value = pair.strip().partition("=")
        if key == name:
            return value
    return None


def texts(data):
    """Every string a message carries, however deep: a native `{"text": ...}`, or a
    Socket.IO event's arguments (`{"event": ..., "args": [...]}`)."""
    if isinstance(data, str):
        return [data]
    if isinstance(data, dict):
        return [t for value in data.values() for t in texts(value)]
    if isinstance(data, list):
        return [t for value in data for t in texts(value)]
    return []


def error(code, message):
    return backend_pb2.Error(code=code, message=message)


class Hooks(backend_pb2_grpc.HeraldBackendServicer):
    def __init__(self, store):
        self.store = store

    def Connect(self, request, context):
        user = self.store.user_of(cookie(request.headers, "session") or "")
        if user is None:
            return backend_pb2.ConnectReply(error=error(101, "log in first"))
        return backend_pb2.ConnectReply(user=user, info=json.dumps({"name": user}))

    def Publish(self, request, context):
        words = set()
        for text in texts(json.loads(request.data)):
            words.update(re.findall(r"\w+", text.lower()))
        if words & BANNED:
            return backend_pb2.PublishReply(error=error(BANNED_WORD, "that word is not allowed"))
        return backend_pb2.PublishReply()

    def Rpc(self, request, context):
        if request.method != "history":
            return backend_pb2.RpcReply(error=error(UNKNOWN_METHOD, "unknown method"))
        args = json.loads(request.data or "null") or {}
        if not isinstance(args, dict):
            return backend_pb2.RpcReply(error=error(BAD_ARGUMENT, "history takes {room, limit?}"))
        room, limit = args.get("room"), args.get("limit", 20)
        if not isinstance(room, str) or not isinstance(limit, int) or not 0 < limit <= 100:
            return backend_pb2.RpcReply(error=error(BAD_ARGUMENT, "history takes {room, limit?}"))
        messages = self.store.last_messages(f"chat:{room}", limit)
        return backend_pb2.RpcReply(data=json.dumps(messages))


def consume(store, api_address, api_key, stop):
    """Follows the consume stream for ever, reconnecting after failures, each time from
    the positions stored with the messages."""
    metadata = [("x-api-key", api_key)] if api_key else []
    started_ms = int(time.time() * 1000)
    while not stop.is_set():
        positions = store.positions()
        request = api_pb2.ConsumeRequest(
            pattern="chat:*",
            positions=[api_pb2.ChannelPosition(
                channel=c, position=api_pb2.StreamPosition(offset=o, epoch=e))
                for (c, e, o, _) in positions],
            # Channels not in `positions` are read from then on: the newest message stored,
            # or, before the first, when this backend started (Herald may come up later).
            since_ms=max((t for (*_, t) in positions), default=started_ms))
        try:
            with grpc.insecure_channel(api_address) as channel:
                stream = api_pb2_grpc.HeraldApiStub(channel).Consume(request, metadata=metadata)
                log.info("following chat:* on %s (%d channels known)", api_address,
                         len(positions))
                for event in stream:
                    if event.HasField("publication"):
                        p = event.publication
                        store.store(p.channel, p.epoch, p.publication)
                    else:
                        lost = event.lost
                        log.warning("messages of %s up to %d are gone", lost.channel,
                                    lost.position.offset)
                        store.skip_to(lost.channel, lost.position.epoch, lost.position.offset)
        except grpc.RpcError as e:
            log.warning("consume stream: %s; again in 1 s", e.code())
        stop.wait(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hooks-listen", default="127.0.0.1:50051",
                        help="where Herald's hooks reach this backend")
    parser.add_argument("--herald-api", default="127.0.0.1:3200",
                        help="Herald's gRPC server API, for the consume stream")
    parser.add_argument("--api-key", default="", help="Herald's api.key, if set")
    parser.add_argument("--db", default=str(HERE / "chat.db"))
    parser.add_argument("--session", action="append", default=[], metavar="TOKEN=USER",
                        help="a session to accept (a real app has a login page)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    store = Store(args.db)
    for session in args.session:
        token, _, user = session.partition("=")
        store.add_session(token, user)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    backend_pb2_grpc.add_HeraldBackendServicer_to_server(Hooks(store), server)
    server.add_insecure_port(args.hooks_listen)
    server.start()
    stop = threading.Event()
    consumer = threading.Thread(
        target=consume, args=(store, args.herald_api, args.api_key, stop), daemon=True)
    consumer.start()
    log.info("hooks listening on %s", args.hooks_listen)
    print(f"ready: hooks on {args.hooks_listen}", flush=True)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        stop.set()


if __name__ == "__main__":
    main()
