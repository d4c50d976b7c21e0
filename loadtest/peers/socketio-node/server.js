// One node of the Socket.IO-Node cluster that herald-bench compares Herald with.
//
// It relays events the way Herald's Socket.IO profile does (docs/socketio.md), so the
// benchmark's clients speak to both alike: `join(room)` puts the socket in a room, and
// `to(room, event, ...args)` sends `event(...args)` to the room's other sockets on every
// node, through the Redis adapter. Stock `socket.io` 4.8, default options except that only
// the WebSocket transport is offered (the benchmark's clients use nothing else).
//
// PORT and REDIS_URL come from the environment; it prints "ready" once it listens.
"use strict";

const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

async function main() {
  const port = Number(process.env.PORT);
  const pub = createClient({ url: process.env.REDIS_URL });
  const sub = pub.duplicate();
  // The benchmark kills Redis with the servers; an unhandled client error would be noise.
  for (const client of [pub, sub]) client.on("error", () => {});
  await Promise.all([pub.connect(), sub.connect()]);
  const io = new Server({ adapter: createAdapter(pub, sub), transports: ["websocket"] });
  io.on("connection", (socket) => {
    socket.on("join", (room, ack) => {
      socket.join(room);
      if (typeof ack === "function") ack({ ok: true });
    });
    socket.on("to", (room, event, ...args) => {
      const ack = typeof args[args.length - 1] === "function" ? args.pop() : null;
      socket.to(room).emit(event, ...args);
      if (ack) ack({ ok: true });
    });
  });
  io.listen(port);
  console.log("ready");
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
