// Broadcast fan-out over Socket.IO: SUBSCRIBERS VUs join one room; after LEAD seconds one
// socket emits RATE stamped `message` events a second to it for SECONDS. Every subscriber
// must get every event, in order: the run fails on any loss (what a subscriber did not get
// by the end), reordering, refusal, or a p99 delivery latency over LATENCY_P99 ms.

import { clearInterval, setInterval, setTimeout } from "k6/timers";
import { Receiver, SocketIo, lost, stamp } from "./lib/herald.js";
import { fanout, fanoutEndMs, fanoutOptions } from "./lib/shapes.js";

const room = __ENV.ROOM || "k6-fanout";

export const options = fanoutOptions("socketio");

export function subscriber() {
  const receiver = new Receiver({ gaps: false });
  const socket = new SocketIo({
    ready: (socket) => socket.emit("join", [room], () => {}),
    event: (name, args) => {
      if (name === "message") receiver.take(args[0]);
    },
  });
  setTimeout(() => {
    lost.add(Math.max(0, fanout.messages - receiver.count));
    socket.close();
  }, fanoutEndMs);
}

export function publisher() {
  new SocketIo({
    ready: (socket) => {
      let n = 0;
      const sending = setInterval(() => {
        // With an ack, so that a refusal counts (herald_refused).
        socket.emit("to", [room, "message", stamp(0, n++)], () => {});
        if (n === fanout.messages) {
          clearInterval(sending);
          setTimeout(() => socket.close(), 1000);
        }
      }, 1000 / fanout.rate);
    },
  });
}
