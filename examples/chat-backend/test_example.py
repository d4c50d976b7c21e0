"""The example backend against a real Herald node (standalone, as `cargo run` starts it):
clients admitted by their session cookie, a banned word refused with the backend's code,
every message stored in SQLite through the consume stream, `history` answered by RPC, and
a restarted backend going on from where it was.

Run: EXAMPLE_HERALD_BINARY=target/debug/herald python test_example.py  (test.sh does it all)
"""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

import websocket

HERE = pathlib.Path(__file__).resolve().parent
PATIENCE = 30


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_line(process, pattern, what):
    """The first match of `pattern` in the process's output, read until it appears."""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            sys.exit(f"{what} exited before it was ready")
        match = re.search(pattern, line)
        if match:
            return match
    sys.exit(f"{what} not ready within {PATIENCE} s")


def eventually(check, what):
    deadline = time.monotonic() + PATIENCE
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            sys.exit(f"not within {PATIENCE} s: {what}")
        time.sleep(0.05)


class Client:
    """A native-protocol client: commands with ids, replies matched to them."""

    def __init__(self, url, session=None):
        headers = [f"Cookie: session={session}"] if session else []
        self.ws = websocket.create_connection(url, header=headers, timeout=PATIENCE)
        self.next_id = 1
        self.pushes = []

    def call(self, method, params):
        command_id = self.next_id
        self.next_id += 1
        self.ws.send(json.dumps({"id": command_id, "method": method, "params": params}))
        while True:
            frame = json.loads(self.ws.recv())
            if frame.get("id") == command_id:
                return frame
            self.pushes.append(frame)

    def push(self):
        if self.pushes:
            return self.pushes.pop(0)
        return json.loads(self.ws.recv())


class Backend:
    def __init__(self, hooks, api, db):
        self.args = [sys.executable, str(HERE / "backend.py"), "--hooks-listen", hooks,
                     "--herald-api", api, "--db", db,
                     "--session", "s-alice=alice", "--session", "s-bob=bob"]
        self.start()

    def start(self):
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True)
        wait_line(self.process, r"^ready", "the backend")

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def main():
    default = HERE.parent.parent / "target/debug/herald"
    binary = os.environ.get("EXAMPLE_HERALD_BINARY", str(default))
    hooks = f"127.0.0.1:{free_port()}"
    api = f"127.0.0.1:{free_port()}"
    work = tempfile.mkdtemp(prefix="chat-backend-")
    backend = Backend(hooks, api, os.path.join(work, "chat.db"))
    # The node reads every HERALD_* variable as a setting: give it only its own.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    for hook in ("CONNECT", "RPC", "NAMESPACES__CHAT__PUBLISH"):
        env[f"HERALD_HOOKS__{hook}__URL"] = f"grpc://{hooks}"
    herald = subprocess.Popen(
        [binary, "--config", str(HERE / "herald.toml"), "--listen", "127.0.0.1:0",
         "--api-listen", api],
        stdout=subprocess.PIPE, text=True, env=env)
    try:
        url = wait_line(herald, r"native WebSocket: (ws://\S+)\)", "herald").group(1)
        run(url, backend)
        print("example backend: ok")
    finally:
        herald.kill()
        backend.kill()


def run(url, backend):
    # Admitted by the session cookie; refused without one, with the backend's answer.
    alice, bob = Client(url, "s-alice"), Client(url, "s-bob")
    for client, user in ((alice, "alice"), (bob, "bob")):
        reply = client.call("connect", {})
        assert reply["result"]["user"] == user, reply
        assert "result" in client.call("subscribe", {"channel": "chat:lobby"})
    stranger = Client(url).call("connect", {})
    assert stranger["error"]["code"] == 101, stranger
    assert stranger["error"]["message"] == "log in first", stranger

    # The publish hook refuses a banned word with the app's code; the others go through.
    refused = alice.call("publish", {"channel": "chat:lobby", "data": {"text": "free SPAM!"}})
    assert refused["error"]["code"] == 1001, refused
    for text in ("hello", "how are you?", "这是一条消息"):
        reply = alice.call("publish", {"channel": "chat:lobby", "data": {"text": text}})
        assert "result" in reply, reply
    for text in ("hello", "how are you?", "这是一条消息"):
        push = bob.push()
        assert push["push"] == "publication" and push["data"]["text"] == text, push

    # Stored through the consume stream, read back through RPC.
    def history():
        reply = bob.call("rpc", {"method": "history", "data": {"room": "lobby"}})
        messages = reply["result"]["data"]
        return messages if len(messages) == 3 else None
    stored = eventually(history, "three messages stored")
    assert [m["data"]["text"] for m in stored] == ["hello", "how are you?", "这是一条消息"]
    assert {m["user"] for m in stored} == {"alice"}
    unknown = bob.call("rpc", {"method": "nope"})
    assert unknown["error"]["code"] == 1002, unknown

    # A restarted backend goes on from its stored positions: nothing twice, nothing lost.
    backend.kill()
    backend.start()
    def published():
        reply = bob.call("publish", {"channel": "chat:lobby", "data": {"text": "back again"}})
        return "result" in reply
    eventually(published, "the publish hook answers again")
    def four():
        reply = bob.call("rpc", {"method": "history", "data": {"room": "lobby"}})
        messages = reply["result"]["data"]
        return messages if len(messages) == 4 else None
    stored = eventually(four, "the fourth message stored")
    assert [m["offset"] for m in stored] == [1, 2, 3, 4], stored


if __name__ == "__main__":
    main()
