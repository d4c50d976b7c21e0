// A stock socket.io-client, driven by Herald's tests through JSON lines.
//
// Usage: node agent.mjs URL '{"namespace": "/chat", "options": {...}}'
// stdin, one command per line:
//   {"op": "emit", "seq": 1, "event": "message", "args": [...], "ack": true}
//   {"op": "disconnect"}   {"op": "connect"}   {"op": "close"}
// stdout, one report per line:
//   {"type": "connect", "id": "...", "recovered": false}
//   {"type": "event", "event": "message", "args": [...]}
//   {"type": "ack", "seq": 1, "value": {...}}
//   {"type": "connect_error", "message": "..."}
//   {"type": "disconnect", "reason": "..."}
// Binary values are written {"$binary": [byte, ...]} in both directions.
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const [url, config = "{}"] = process.argv.slice(2);
const { namespace = "/", options = {} } = JSON.parse(config);
const socket = io(url + namespace, { reconnection: true, ...options });

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
const report = (line) => process.stdout.write(JSON.stringify(line, describe) + "\n");

socket.on("connect", () => report({ type: "connect", id: socket.id, recovered: socket.recovered }));
socket.on("connect_error", (error) => report({ type: "connect_error", message: error.message, data: error.data }));
socket.on("disconnect", (reason) => report({ type: "disconnect", reason }));
socket.onAny((event, ...args) => report({ type: "event", event, args }));

createInterface({ input: process.stdin }).on("line", (line) => {
  const command = JSON.parse(line);
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
    case "close":
      socket.close();
      process.exit(0);
  }
});
