// Broadcast fan-out over the native protocol: SUBSCRIBERS VUs subscribe to one channel;
// after LEAD seconds one publisher sends RATE stamped messages a second for SECONDS. Every
// subscriber must get every message, in order: the run fails on any loss (counted exactly:
// what a subscriber did not get by the end), on reordering, or on a p99 delivery latency
// over LATENCY_P99 ms.

import { clearInterval, setInterval, setTimeout } from "k6/timers";
import { Native, Receiver, lost, stamp } from "./lib/herald.js";
import { fanout, fanoutEndMs, fanoutOptions } from "./lib/shapes.js";

// Fixed: init code runs once per VU, and every VU must name the same channel.
const channel = __ENV.CHANNEL || "k6-fanout:broadcast";

export const options = fanoutOptions("native");

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
    lost.add(Math.max(0, fanout.messages - receiver.count));
    client.close();
  }, fanoutEndMs);
}

export function publisher() {
  new Native({
    ready: (client) => {
      let n = 0;
      const sending = setInterval(() => {
        client.call("publish", { channel: channel, data: stamp(0, n++) });
        if (n === fanout.messages) {
          clearInterval(sending);
          setTimeout(() => client.close(), 1000);
        }
      }, 1000 / fanout.rate);
    },
  });
}
