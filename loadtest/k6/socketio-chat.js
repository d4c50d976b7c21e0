// Chat rooms over Socket.IO (Engine.IO v4 frames on a WebSocket, as a stock client sends
// them): every VU joins one of ROOMS rooms of the root namespace, emits RATE stamped
// `message` events a second to it for SECONDS, and receives what the room says. Fails on
// any loss, reordering or refusal, or a p99 delivery latency over LATENCY_P99 ms.

import { clearInterval, setInterval, setTimeout } from "k6/timers";
import { Receiver, SocketIo, stamp } from "./lib/herald.js";

const vus = Number(__ENV.VUS || 20);
const rooms = Number(__ENV.ROOMS || 5);
const rate = Number(__ENV.RATE || 5);
const seconds = Number(__ENV.SECONDS || 20);
const latencyP99 = Number(__ENV.LATENCY_P99 || 500);

export const options = {
  scenarios: {
    chat: {
      executor: "per-vu-iterations",
      vus: vus,
      iterations: 1,
      maxDuration: `${seconds + 30}s`,
      tags: { protocol: "socketio" },
    },
  },
  thresholds: {
    herald_delivered: ["count>0"],
    herald_lost: ["count==0"],
    herald_reordered: ["count==0"],
    herald_refused: ["count==0"],
    herald_delivery_latency: [`p(99)<${latencyP99}`],
  },
};

export default function () {
  const room = `k6-chat-${__VU % rooms}`;
  const receiver = new Receiver();
  new SocketIo({
    ready: (socket) =>
      socket.emit("join", [room], () => {
        let n = 0;
        const sending = setInterval(() => {
          // With an ack, so that a refusal counts (herald_refused).
          socket.emit("to", [room, "message", stamp(__VU, n++)], () => {});
        }, 1000 / rate);
        setTimeout(() => {
          clearInterval(sending);
          setTimeout(() => socket.close(), 3000);
        }, seconds * 1000);
      }),
    event: (name, args) => {
      if (name === "message") receiver.take(args[0]);
    },
  });
}
