// Chat rooms over Socket.IO (Engine.IO v4 frames on a WebSocket, as a stock client sends
// them): every VU joins one of ROOMS rooms of the root namespace, emits RATE stamped
// `message` events a second to it for SECONDS, and receives what the room says. Fails on
// any loss, reordering or refusal, or a p99 delivery latency over LATENCY_P99 ms.

import { clearInterval, setInterval, setTimeout } from "k6/timers";
import { Receiver, SocketIo, stamp } from "./lib/herald.js";
import { chat, chatOptions } from "./lib/shapes.js";

export const options = chatOptions("socketio");

export default function () {
  const room = `k6-chat-${__VU % chat.rooms}`;
  const receiver = new Receiver();
  new SocketIo({
    ready: (socket) =>
      socket.emit("join", [room], () => {
        let n = 0;
        const sending = setInterval(() => {
          // With an ack, so that a refusal counts (herald_refused).
          socket.emit("to", [room, "message", stamp(__VU, n++)], () => {});
        }, 1000 / chat.rate);
        setTimeout(() => {
          clearInterval(sending);
          setTimeout(() => socket.close(), 3000);
        }, chat.seconds * 1000);
      }),
    event: (name, args) => {
      if (name === "message") receiver.take(args[0]);
    },
  });
}
