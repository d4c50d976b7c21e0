// A connection storm over the native protocol: VUs ramp up to VUS over RAMP seconds; each
// iteration opens a connection, connects, subscribes to a channel of its own (as a user
// to their personal channel), holds it HOLD seconds and leaves. Fails when connections
// fail (checks under 99 %) or the 95th percentile of connect time passes CONNECT_P95 ms.

import { check } from "k6";
import { setTimeout } from "k6/timers";
import { Native } from "./lib/herald.js";

const vus = Number(__ENV.VUS || 200);
const ramp = Number(__ENV.RAMP || 10);
const hold = Number(__ENV.HOLD || 5);
const connectP95 = Number(__ENV.CONNECT_P95 || 1000);

export const options = {
  scenarios: {
    storm: {
      executor: "ramping-vus",
      startVUs: 0,
      stages: [
        { duration: `${ramp}s`, target: vus },
        { duration: `${hold * 2}s`, target: vus },
        { duration: "2s", target: 0 },
      ],
      gracefulRampDown: `${hold + 5}s`,
      tags: { protocol: "native" },
    },
  },
  thresholds: {
    checks: ["rate>0.99"],
    herald_connect_time: [`p(95)<${connectP95}`],
  },
};

export default function () {
  let subscribed = false;
  const client = new Native({
    ready: (client) =>
      client.call("subscribe", { channel: `k6-storm:${__VU}-${__ITER}` }, (reply) => {
        subscribed = Boolean(reply.result);
      }),
  });
  setTimeout(() => {
    check(subscribed, { "connected and subscribed": (ok) => ok });
    client.close();
  }, hold * 1000);
}
