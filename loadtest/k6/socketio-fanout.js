// Broadcast fan-out over Socket.IO: SUBSCRIBERS VUs join one room; after LEAD seconds one
// socket emits RATE stamped `message` events a second to it for SECONDS. Every subscriber
// must get every event, in order: the run fails on any loss (what a subscriber did not get
// by the end), reordering, refusal, or a p99 delivery latency over LATENCY_P99 ms.

import { clearInterval, setInterval, setTimeout } from "k6/timers";
import { Receiver, SocketIo, lost, stamp } from "./lib/herald.js";

const subscribers = Number(__ENV.SUBSCRIBERS || 100);
const rate = Number(__ENV.RATE || 20);
const seconds = Number(__ENV.SECONDS || 20);
const lead = Number(__ENV.LEAD || 5);
const latencyP99 = Number(__ENV.LATENCY_P99 || 500);
const room = __ENV.ROOM || "k6-fanout";
const messages = rate * seconds;

export const options = {
  scenarios: {
    subscribers: {
      executor: "per-vu-iterations",
      vus: subscribers,
      iterations: 1,
      exec: "subscriber",
      maxDuration: `${lead + seconds + 40}s`,
      tags: { protocol: "socketio", role: "subscriber" },
    },
    publisher: {
      executor: "per-vu-iterations",
      vus: 1,
      iterations: 1,
      exec: "publisher",
      startTime: `${lead}s`,
      maxDuration: `${seconds + 30}s`,
      tags: { protocol: "socketio", role: "publisher" },
    },
  },
  thresholds: {
    herald_delivered: [`count>=${messages * subscribers}`],
    herald_lost: ["count==0"],
    herald_reordered: ["count==0"],
    herald_refused: ["count==0"],
    herald_delivery_latency: [`p(99)<${latencyP99}`],
  },
};

export function subscriber() {
  const receiver = new Receiver({ gaps: false });
  const socket = new SocketIo({
    ready: (socket) => socket.emit("join", [room], () => {}),
    event: (name, args) => {
      if (name === "message") receiver.take(args[0]);
    },
  });
  setTimeout(() => {
    lost.add(Math.max(0, messages - receiver.count));
    socket.close();
  }, (lead + seconds + 10) * 1000);
}

export function publisher() {
  new SocketIo({
    ready: (socket) => {
      let n = 0;
      const sending = setInterval(() => {
        // With an ack, so that a refusal counts (herald_refused).
        socket.emit("to", [room, "message", stamp(0, n++)], () => {});
        if (n === messages) {
          clearInterval(sending);
          setTimeout(() => socket.close(), 1000);
        }
      }, 1000 / rate);
    },
  });
}
