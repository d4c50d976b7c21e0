"""A stock python-socketio client, driven by Herald's tests through JSON lines.

Same line protocol as clients/js/agent.mjs:
    python agent.py URL '{"namespace": "/chat", "options": {"transports": ["websocket"]}}'
stdin: {"op": "emit", "seq": 1, "event": "message", "args": [...], "ack": true},
       {"op": "disconnect"}, {"op": "close"}
stdout: {"type": "connect"|"event"|"ack"|"connect_error"|"disconnect", ...}
"""

import json
import sys
import threading

import socketio

url, config = sys.argv[1], json.loads(sys.argv[2] if len(sys.argv) > 2 else "{}")
namespace = config.get("namespace", "/")
options = config.get("options", {})
lock = threading.Lock()


def report(line):
    with lock:
        sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
        sys.stdout.flush()


client = socketio.Client(reconnection=True)


@client.on("connect", namespace=namespace)
def on_connect():
    report({"type": "connect", "id": client.get_sid(namespace)})


@client.on("connect_error", namespace=namespace)
def on_connect_error(data):
    message = data.get("message") if isinstance(data, dict) else str(data)
    report({"type": "connect_error", "message": message, "data": data})


@client.on("disconnect", namespace=namespace)
def on_disconnect(reason=None):
    report({"type": "disconnect", "reason": str(reason)})


@client.on("*", namespace=namespace)
def on_any(event, *args):
    report({"type": "event", "event": event, "args": list(args)})


def ack_reporter(seq):
    def callback(*values):
        report({"type": "ack", "seq": seq, "value": values[0] if values else None})

    return callback


try:
    client.connect(url, namespaces=[namespace], transports=options.get("transports"))
except socketio.exceptions.ConnectionError as error:
    report({"type": "connect_error", "message": str(error)})
    sys.exit(0)

for line in sys.stdin:
    command = json.loads(line)
    op = command["op"]
    if op == "emit":
        callback = ack_reporter(command["seq"]) if command.get("ack") else None
        client.emit(command["event"], tuple(command["args"]), namespace=namespace, callback=callback)
    elif op == "disconnect":
        client.disconnect()
    elif op == "close":
        break
client.disconnect()
