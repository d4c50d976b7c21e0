// Chat rooms over the native protocol: every VU is in one of ROOMS channels (with history),
// publishes RATE stamped messages a second for SECONDS, and receives what its room says.
// Fails on any loss, reordering or refusal, or a p99 delivery latency over LATENCY_P99 ms.
//
//   k6 run -e HERALD_URLS=http://127.0.0.1:3001,http://127.0.0.1:3002 native-chat.js

import { clearInterval, setInterval, setTimeout } from "k6/timers";
import { Native, Receiver, stamp } from "./lib/herald.js";
import { chat, chatOptions } from "./lib/shapes.js";

export const options = chatOptions("native");

export default function () {
  const room = `k6-chat:${__VU % chat.rooms}`;
  const receiver = new Receiver();
  new Native({
    ready: (client) =>
      client.call("subscribe", { channel: room }, () => {
        let n = 0;
        const sending = setInterval(() => {
          client.call("publish", { channel: room, data: stamp(__VU, n++) });
        }, 1000 / chat.rate);
        setTimeout(() => {
          clearInterval(sending);
          // Time for the last messages of the room to arrive.
          setTimeout(() => client.close(), 3000);
        }, chat.seconds * 1000);
      }),
    push: (push) => {
      if (push.push === "publication") receiver.take(push.data);
    },
  });
}
