"""A stock python-socketio client, driven by Herald's tests through JSON lines.

Same line protocol as clients/js/agent.mjs:
    python agent.py URL '{"namespace": "/chat", "options": {"transports": ["websocket"]}}'
With "one_argument": ["message", ...] in the config, those events get a handler that takes
exactly one argument, `def handler(data)`, as applications write them: an event with more
arguments makes python-socketio raise TypeError, and no report comes.
stdin: {"op": "emit", "seq": 1, "event": "message", "args": [...], "ack": true},
       {"op": "disconnect"}, {"op": "close"}
stdout: {"type": "connect"|"event"|"ack"|"connect_error"|"disconnect", ...}
Binary values are written {"$binary": [byte, ...]} in both directions.
"""

import json
import sys
import threading

import socketio

url, config = sys.argv[1], json.loads(sys.argv[2] if len(sys.argv) > 2 else "{}")
namespace = config.get("namespace", "/")
options = config.get("options", {})
lock = threading.Lock()


def describe(value):
    if isinstance(value, (bytes, bytearray)):
        return {"$binary": list(value)}
    if isinstance(value, list):
        return [describe(v) for v in value]
    if isinstance(value, dict):
        return {k: describe(v) for k, v in value.items()}
    return value


def revive(value):
    if isinstance(value, list):
        return [revive(v) for v in value]
    if isinstance(value, dict):
        if isinstance(value.get("$binary"), list):
            return bytes(value["$binary"])
        return {k: revive(v) for k, v in value.items()}
    return value


def report(line):
    with lock:
        sys.stdout.write(json.dumps(describe(line), ensure_ascii=False) + "\n")
        sys.stdout.flush()


client = socketio.Client(reconnection=True)


@client.on("connect", namespace=namespace)
def on_connect():
    report({"type": "connect", "id": client.get_sid(namespace), "transport": client.transport()})


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


def one_argument_handler(event):
    def handler(data):
        report({"type": "event", "event": event, "args": [data]})

    return handler


for event in config.get("one_argument", []):
    client.on(event, one_argument_handler(event), namespace=namespace)


def ack_reporter(seq):
    def callback(*values):
        report({"type": "ack", "seq": seq, "value": values[0] if values else None})

    return callback


try:
    client.connect(
        url,
        namespaces=[namespace],
        transports=options.get("transports"),
        auth=options.get("auth"),
    )
except socketio.exceptions.ConnectionError as error:
    report({"type": "connect_error", "message": str(error)})
    sys.exit(0)

for line in sys.stdin:
    command = json.loads(line)
    op = command["op"]
    if op == "emit":
        callback = ack_reporter(command["seq"]) if command.get("ack") else None
        args = tuple(revive(command["args"]))
        client.emit(command["event"], args, namespace=namespace, callback=callback)
    elif op == "disconnect":
        client.disconnect()
    elif op == "close":
        break
client.disconnect()
