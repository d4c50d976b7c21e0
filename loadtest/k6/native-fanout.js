// Broadcast fan-out over the native protocol: SUBSCRIBERS VUs subscribe to one channel;
// after LEAD seconds one publisher sends RATE stamped messages a second for SECONDS. Every
// subscriber must get every message, in order: the run fails on any loss (counted exactly:
// what a subscriber did not get by the end), on reordering, or on a p99 delivery latency
// over LATENCY_P99 ms.

import { clearInterval, setInterval, setTimeout } from "k6/timers";
import { Native, Receiver, lost, stamp } from "./lib/herald.js";

const subscribers = Number(__ENV.SUBSCRIBERS || 100);
const rate = Number(__ENV.RATE || 20);
const seconds = Number(__ENV.SECONDS || 20);
const lead = Number(__ENV.LEAD || 5);
const latencyP99 = Number(__ENV.LATENCY_P99 || 500);
// Fixed: init code runs once per VU, and every VU must name the same channel.
const channel = __ENV.CHANNEL || "k6-fanout:broadcast";
const messages = rate * seconds;

export const options = {
  scenarios: {
    subscribers: {
      executor: "per-vu-iterations",
      vus: subscribers,
      iterations: 1,
      exec: "subscriber",
      maxDuration: `${lead + seconds + 40}s`,
      tags: { protocol: "native", role: "subscriber" },
    },
    publisher: {
      executor: "per-vu-iterations",
      vus: 1,
      iterations: 1,
      exec: "publisher",
      startTime: `${lead}s`,
      maxDuration: `${seconds + 30}s`,
      tags: { protocol: "native", role: "publisher" },
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
  // Losses are counted once, at the end, from what did not arrive.
  const receiver = new Receiver({ gaps: false });
  const client = new Native({
    ready: (client) => client.call("subscribe", { channel: channel }),
    push: (push) => {
      if (push.push === "publication") receiver.take(push.data);
    },
  });
  setTimeout(() => {
    lost.add(Math.max(0, messages - receiver.count));
    client.close();
  }, (lead + seconds + 10) * 1000);
}

export function publisher() {
  new Native({
    ready: (client) => {
      let n = 0;
      const sending = setInterval(() => {
        client.call("publish", { channel: channel, data: stamp(0, n++) });
        if (n === messages) {
          clearInterval(sending);
          setTimeout(() => client.close(), 1000);
        }
      }, 1000 / rate);
    },
  });
}
