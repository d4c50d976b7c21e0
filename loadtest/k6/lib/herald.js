// What every k6 script here shares: where Herald is, its two client protocols over k6's
// WebSocket (the native JSON protocol, and Socket.IO as Engine.IO v4 frames, as a stock
// client on the WebSocket transport speaks it), payloads that carry their sender, sequence
// number and send time, and the metrics the scripts report.
//
// Settings come from the environment (`k6 run -e NAME=value`):
//   HERALD_URLS   gateways, comma-separated (default http://127.0.0.1:3000); VU n uses the
//                 n-th, in turn, as a load balancer would spread them
//   HERALD_TOKEN  a connection token (JWT), if the deployment admits no anonymous clients

import { WebSocket } from "k6/experimental/websockets";
import { Counter, Trend } from "k6/metrics";

/** Publish-to-delivery time, from the send time in the payload (one clock: k6's). */
export const deliveryLatency = new Trend("herald_delivery_latency", true);
/** Time from opening a connection to the server's acceptance of `connect` (or `40`). */
export const connectTime = new Trend("herald_connect_time", true);
export const delivered = new Counter("herald_delivered");
/** Payloads a receiver never got: gaps in a sender's numbers, or missing at the end. */
export const lost = new Counter("herald_lost");
/** Payloads that came after a later one of the same sender. */
export const reordered = new Counter("herald_reordered");
/** Commands or events the server refused (an error reply or ack). */
export const refused = new Counter("herald_refused");

const urls = (__ENV.HERALD_URLS || "http://127.0.0.1:3000").split(",").map((u) => u.trim());
const token = __ENV.HERALD_TOKEN || "";

/** The gateway this VU talks to, as `ws://host:port`. */
export function gateway() {
  const url = urls[(__VU || 0) % urls.length];
  return url.replace(/^http/, "ws").replace(/\/$/, "");
}

/** A payload carrying who sent it, its number and when. */
export function stamp(sender, n) {
  return { s: sender, n: n, t: Date.now() };
}

/**
 * Counts what one receiver gets: latency, reordering and (unless `gaps` is false, for a
 * script that counts what is missing at the end instead) gaps in each sender's numbers.
 */
export class Receiver {
  constructor({ gaps = true } = {}) {
    this.next = {};
    this.count = 0;
    this.gaps = gaps;
  }

  take(data) {
    if (!data || typeof data.s === "undefined") return;
    deliveryLatency.add(Date.now() - data.t);
    delivered.add(1);
    this.count += 1;
    const expected = this.next[data.s];
    if (typeof expected === "undefined" || data.n === expected) {
      this.next[data.s] = data.n + 1;
    } else if (data.n > expected) {
      if (this.gaps) lost.add(data.n - expected);
      this.next[data.s] = data.n + 1;
    } else {
      reordered.add(1);
    }
  }
}

/**
 * A native-protocol connection. `handlers.ready()` runs once `connect` succeeded,
 * `handlers.push(push)` for every push; `call(method, params, onReply)` sends a command.
 */
export class Native {
  constructor(handlers) {
    this.pending = {};
    this.nextId = 1;
    this.ws = new WebSocket(`${gateway()}/connection/websocket`);
    const opened = Date.now();
    this.ws.onopen = () => {
      const params = token ? { token: token } : {};
      this.call("connect", params, (reply) => {
        if (reply.error) return this.ws.close();
        connectTime.add(Date.now() - opened);
        if (handlers.ready) handlers.ready(this);
      });
    };
    this.ws.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      if (typeof frame.id !== "undefined") {
        if (frame.error) refused.add(1);
        const reply = this.pending[frame.id];
        delete this.pending[frame.id];
        if (reply) reply(frame);
      } else if (handlers.push) {
        handlers.push(frame);
      }
    };
    this.ws.onerror = (e) => console.error(`native connection: ${e.error}`);
  }

  call(method, params, onReply) {
    const id = this.nextId++;
    if (onReply) this.pending[id] = onReply;
    this.ws.send(JSON.stringify({ id: id, method: method, params: params }));
  }

  close() {
    this.ws.close();
  }
}

/**
 * A Socket.IO socket on the root namespace, over Engine.IO v4 frames on a WebSocket.
 * `handlers.ready()` runs once connected, `handlers.event(name, args)` for every event;
 * `emit(name, args, onAck)` sends one.
 */
export class SocketIo {
  constructor(handlers) {
    this.acks = {};
    this.nextAck = 1;
    this.ws = new WebSocket(`${gateway()}/socket.io/?EIO=4&transport=websocket`);
    const opened = Date.now();
    this.ws.onmessage = (event) => {
      const text = event.data;
      if (text === "2") {
        this.ws.send("3");
      } else if (text[0] === "0") {
        this.ws.send(token ? `40${JSON.stringify({ token: token })}` : "40");
      } else if (text.startsWith("40")) {
        connectTime.add(Date.now() - opened);
        if (handlers.ready) handlers.ready(this);
      } else if (text.startsWith("44")) {
        refused.add(1);
        this.ws.close();
      } else if (text.startsWith("42")) {
        const [name, ...args] = JSON.parse(text.slice(2));
        if (handlers.event) handlers.event(name, args);
      } else if (text.startsWith("43")) {
        const at = text.indexOf("[");
        const id = Number(text.slice(2, at));
        const args = JSON.parse(text.slice(at));
        if (args[0] && args[0].error) refused.add(1);
        const ack = this.acks[id];
        delete this.acks[id];
        if (ack) ack(args);
      }
    };
    this.ws.onerror = (e) => console.error(`Socket.IO connection: ${e.error}`);
  }

  emit(name, args, onAck) {
    let id = "";
    if (onAck) {
      id = this.nextAck++;
      this.acks[id] = onAck;
    }
    this.ws.send(`42${id}${JSON.stringify([name, ...args])}`);
  }

  close() {
    this.ws.close();
  }
}
