// History reads over the native protocol: every iteration publishes MESSAGES stamped
// messages to a channel of its own, one after the other, then reads them back with
// `history`. Fails when a read does not return them all in order (checks under 99 %) or
// the 95th percentile of a read passes HISTORY_P95 ms.

import { check } from "k6";
import { Trend } from "k6/metrics";
import { Native, stamp } from "./lib/herald.js";

const vus = Number(__ENV.VUS || 10);
const seconds = Number(__ENV.SECONDS || 20);
const messages = Number(__ENV.MESSAGES || 20);
const historyP95 = Number(__ENV.HISTORY_P95 || 250);

const historyTime = new Trend("herald_history_time", true);

export const options = {
  scenarios: {
    history: {
      executor: "constant-vus",
      vus: vus,
      duration: `${seconds}s`,
      tags: { protocol: "native" },
    },
  },
  thresholds: {
    checks: ["rate>0.99"],
    herald_history_time: [`p(95)<${historyP95}`],
    herald_refused: ["count==0"],
  },
};

export default function () {
  const channel = `k6-history:${__VU}-${__ITER}`;
  new Native({
    ready: (client) => {
      const publish = (n) => {
        if (n === messages) return read(client);
        client.call("publish", { channel: channel, data: stamp(__VU, n) }, () => publish(n + 1));
      };
      publish(0);
    },
  });

  function read(client) {
    const asked = Date.now();
    client.call("history", { channel: channel, limit: messages }, (reply) => {
      historyTime.add(Date.now() - asked);
      const got = (reply.result && reply.result.publications) || [];
      check(got, {
        "history holds every message, in order": (p) =>
          p.length === messages && p.every((publication, i) => publication.data.n === i),
      });
      client.close();
    });
  }
}
