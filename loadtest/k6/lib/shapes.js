// The settings and k6 options of the chat and fan-out shapes, which the native and the
// Socket.IO scripts share: only how a client joins and sends differs between them.

const number = (name, fallback) => Number(__ENV[name] || fallback);

/** Chat: VUS clients in ROOMS rooms, each sending RATE a second for SECONDS. */
export const chat = {
  vus: number("VUS", 20),
  rooms: number("ROOMS", 5),
  rate: number("RATE", 5),
  seconds: number("SECONDS", 20),
};

/** Fan-out: SUBSCRIBERS in one room; after LEAD s, one sender, RATE a second for SECONDS. */
export const fanout = {
  subscribers: number("SUBSCRIBERS", 100),
  rate: number("RATE", 20),
  seconds: number("SECONDS", 20),
  lead: number("LEAD", 5),
};
fanout.messages = fanout.rate * fanout.seconds;

/** Fails on any loss, reordering or refusal, or a p99 latency over LATENCY_P99 ms. */
function thresholds(delivered) {
  return {
    herald_delivered: [delivered],
    herald_lost: ["count==0"],
    herald_reordered: ["count==0"],
    herald_refused: ["count==0"],
    herald_delivery_latency: [`p(99)<${number("LATENCY_P99", 500)}`],
  };
}

export function chatOptions(protocol) {
  return {
    scenarios: {
      chat: {
        executor: "per-vu-iterations",
        vus: chat.vus,
        iterations: 1,
        maxDuration: `${chat.seconds + 30}s`,
        tags: { protocol: protocol },
      },
    },
    thresholds: thresholds("count>0"),
  };
}

export function fanoutOptions(protocol) {
  return {
    scenarios: {
      subscribers: {
        executor: "per-vu-iterations",
        vus: fanout.subscribers,
        iterations: 1,
        exec: "subscriber",
        maxDuration: `${fanout.lead + fanout.seconds + 40}s`,
        tags: { protocol: protocol, role: "subscriber" },
      },
      publisher: {
        executor: "per-vu-iterations",
        vus: 1,
        iterations: 1,
        exec: "publisher",
        startTime: `${fanout.lead}s`,
        maxDuration: `${fanout.seconds + 30}s`,
        tags: { protocol: protocol, role: "publisher" },
      },
    },
    thresholds: thresholds(`count>=${fanout.messages * fanout.subscribers}`),
  };
}

/** When a fan-out subscriber stops waiting and counts what it did not get as lost. */
export const fanoutEndMs = (fanout.lead + fanout.seconds + 10) * 1000;
