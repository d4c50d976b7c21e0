// Stock socket.io-client sockets, driven by Herald's tests through JSON lines.
//
// Usage: node agent.mjs URL '{"namespace": "/chat", "options": {...}, "count": 1}'
// `count` sockets are opened, each on a connection of its own (forceNew when count > 1).
// With "namespaces": ["/a", "/b"] instead, one socket per namespace shares one connection
// (the client's default multiplexing), socket i on namespaces[i].
// stdin, one command per line (`socket` picks one, 0 by default):
//   {"op": "emit", "seq": 1, "event": "message", "args": [...], "ack": true, "socket": 0}
//   {"op": "disconnect"}   {"op": "connect"}   {"op": "close"}
//   {"op": "cut"}: the transport drops, as when a network goes away; no automatic reconnect
//   {"op": "reconnect"}: reconnect as the Manager does (with the pid and last offset)
//   {"op": "auth", "auth": {...}}: what the socket sends in its next CONNECT
// stdout, one report per line (each with its `socket`):
//   {"type": "connect", "id": "...", "recovered": false, "transport": "polling"}
//   {"type": "upgrade", "transport": "websocket"}
//   {"type": "event", "event": "message", "args": [...], "dart": ...}
//     `args` as the listener received them; `dart` is what a handler of Flutter's
//     socket_io_client would get for them (one argument as it is, several as one List,
//     none as null), so that tests can check what a Flutter app sees.
//   {"type": "ack", "seq": 1, "value": {...}}
//   {"type": "connect_error", "message": "..."}
//   {"type": "disconnect", "reason": "..."}
// Binary values are written {"$binary": [byte, ...]} in both directions.
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const [url, config = "{}"] = process.argv.slice(2);
const { namespace = "/", options = {}, count = 1, namespaces } = JSON.parse(config);

// Buffers reach JSON.stringify already turned into {type: "Buffer", data: [...]}.
const describe = (_key, value) => {
  if (value instanceof ArrayBuffer) return { $binary: Array.from(new Uint8Array(value)) };
  if (value && value.type === "Buffer" && Array.isArray(value.data)) return { $binary: value.data };
  return value;
};
const revive = (value) => {
  if (Array.isArray(value)) return value.map(revive);
  if (value && typeof value === "object") {
    if (Array.isArray(value.$binary)) return Buffer.from(value.$binary);
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, revive(v)]));
  }
  return value;
};

const open = (namespace, index, forceNew) => {
  const socket = io(url + namespace, { reconnection: true, forceNew, ...options });
  const report = (line) =>
    process.stdout.write(JSON.stringify({ ...line, socket: index }, describe) + "\n");
  const transport = () => socket.io.engine?.transport?.name;
  socket.io.on("open", () =>
    socket.io.engine.on("upgrade", (t) => report({ type: "upgrade", transport: t.name })),
  );
  socket.on("connect", () =>
    report({ type: "connect", id: socket.id, recovered: socket.recovered, transport: transport() }),
  );
  socket.on("connect_error", (error) =>
    report({ type: "connect_error", message: error.message, data: error.data }),
  );
  socket.on("disconnect", (reason) => report({ type: "disconnect", reason }));
  socket.onAny((event, ...args) => {
    const dart = args.length > 1 ? args : args.length === 1 ? args[0] : null;
    report({ type: "event", event, args, dart });
  });
  return { socket, report };
};

const sockets = namespaces
  ? namespaces.map((ns, i) => open(ns, i, false))
  : Array.from({ length: count }, (_, i) => open(namespace, i, count > 1));

createInterface({ input: process.stdin }).on("line", (line) => {
  const command = JSON.parse(line);
  const { socket, report } = sockets[command.socket ?? 0];
  switch (command.op) {
    case "emit": {
      const args = revive(command.args);
      if (command.ack) {
        socket.emit(command.event, ...args, (value) => report({ type: "ack", seq: command.seq, value }));
      } else {
        socket.emit(command.event, ...args);
      }
      break;
    }
    case "disconnect":
      socket.disconnect();
      break;
    case "connect":
      socket.connect();
      break;
    case "cut":
      socket.io.reconnection(false);
      socket.io.engine.close();
      break;
    case "auth":
      socket.auth = command.auth;
      break;
    case "reconnect":
      socket.io.reconnection(true);
      socket.connect();
      break;
    case "close":
      sockets.forEach(({ socket }) => socket.close());
      process.exit(0);
  }
});
