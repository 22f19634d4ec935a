// Shared by the scenarios: parameters, JSON-line output, input from the driving test, the
// SDK client for one transport, and event recorders.
//
// A scenario is run as `node <scenario>.mjs '<params JSON>'`. Params: `url` (the server's
// http://host:port), `transport` (websocket | http_stream | sse), `protocol` (json |
// protobuf), `deadline_ms` (the whole run), `timeout_ms` (SDK command timeout), plus the
// scenario's own. Every line on stdout is a JSON object with an `event` key; the driver may
// write JSON lines to stdin (`input()` takes them in order). The process exits 0 when the
// scenario completed, 1 on failure or when the deadline passed: it never hangs.

import * as readline from 'node:readline';
import { EventSource } from 'eventsource';
import WebSocket from 'ws';

export const params = JSON.parse(process.argv[2] ?? '{}');

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Write one JSON line; Uint8Array payloads (Protobuf mode) are decoded as JSON. */
export function emit(event, fields = {}) {
  const ancestors = [];
  const line = JSON.stringify({ event, ...fields }, function (key, value) {
    const raw = this[key]; // before toJSON: Node's Buffer would become {type, data}
    if (raw instanceof Uint8Array) return plainBytes(raw);
    if (typeof value !== 'object' || value === null) return value;
    // Only true cycles are cut (e.g. a transport error event's target), not shared objects.
    while (ancestors.length && ancestors[ancestors.length - 1] !== this) ancestors.pop();
    if (ancestors.includes(value)) return '[circular]';
    ancestors.push(value);
    return value;
  });
  process.stdout.write(line + '\n');
}

function plainBytes(bytes) {
  const text = decoder.decode(bytes);
  if (text === '') return null;
  try {
    return JSON.parse(text);
  } catch {
    return { undecodable: text };
  }
}

export function fail(message) {
  emit('fail', { message: String(message) });
  process.exit(1);
}

export function done(fields = {}) {
  emit('done', fields);
  process.exit(0);
}

// Not unref'd: it also keeps the process alive while a scenario awaits something.
setTimeout(() => fail(`deadline of ${params.deadline_ms} ms passed`), params.deadline_ms ?? 20000);
process.on('unhandledRejection', (e) => fail(e?.stack ?? JSON.stringify(e)));
process.on('uncaughtException', (e) => fail(e?.stack ?? e));

// Input from the driver, one JSON object per line.
const inbox = [];
const readers = [];
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const message = JSON.parse(line);
  const reader = readers.shift();
  if (reader) reader(message);
  else inbox.push(message);
});

export function input() {
  if (inbox.length) return Promise.resolve(inbox.shift());
  return new Promise((resolve) => readers.push(resolve));
}

export const protobuf = params.protocol === 'protobuf';
const sdk = protobuf ? await import('centrifuge/build/protobuf') : await import('centrifuge');
export const { Centrifuge } = sdk;

/** A payload as the SDK publishes it: the value itself, or its JSON bytes for Protobuf. */
export function body(value) {
  return protobuf ? encoder.encode(JSON.stringify(value)) : value;
}

/** A received payload as a value. */
export function value(data) {
  return data instanceof Uint8Array ? JSON.parse(decoder.decode(data)) : data;
}

// Node 20 has fetch and ReadableStream, but neither WebSocket nor EventSource.
const NODE = { websocket: WebSocket, eventsource: EventSource, fetch: globalThis.fetch };

/** Like NODE, but every request carries `Origin: origin`, as a browser's would. */
function fromOrigin(origin) {
  const fetch = (url, init = {}) =>
    globalThis.fetch(url, { ...init, headers: { ...init.headers, Origin: origin } });
  class OriginWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols, { origin });
    }
  }
  class OriginEventSource extends EventSource {
    constructor(url, init) {
      super(url, { ...init, fetch });
    }
  }
  return { websocket: OriginWebSocket, eventsource: OriginEventSource, fetch };
}

/** A client of `params.transport` (not connected yet); `options` are Centrifuge options. */
export function client(options = {}) {
  const http = params.url;
  const ws = http.replace(/^http/, 'ws');
  const endpoint = {
    websocket: `${ws}/connection/websocket`,
    http_stream: `${http}/connection/http_stream`,
    sse: `${http}/connection/sse`,
  }[params.transport];
  if (!endpoint) fail(`unknown transport ${params.transport}`);
  const { websocket, eventsource, fetch } = params.origin ? fromOrigin(params.origin) : NODE;
  return new Centrifuge([{ transport: params.transport, endpoint }], {
    websocket,
    eventsource,
    fetch,
    readableStream: globalThis.ReadableStream,
    emulationEndpoint: `${http}/emulation`,
    timeout: params.timeout_ms ?? 5000,
    minReconnectDelay: 50,
    maxReconnectDelay: 1000,
    ...options,
  });
}

/** Records an emitter's events: prints each as a line and queues it for `next()`. */
export class Recorder {
  constructor(emitter, who, names) {
    this.queues = new Map();
    for (const name of names) {
      this.queues.set(name, { items: [], waiters: [] });
      emitter.on(name, (ctx) => {
        emit(name, { who, ...ctx });
        const queue = this.queues.get(name);
        const waiter = queue.waiters.find((w) => w.where(ctx));
        if (waiter) {
          queue.waiters.splice(queue.waiters.indexOf(waiter), 1);
          waiter.resolve(ctx);
        } else {
          queue.items.push(ctx);
        }
      });
    }
  }

  /** The next `name` event satisfying `where`; events that don't are kept for others. */
  next(name, where = () => true) {
    const queue = this.queues.get(name);
    const index = queue.items.findIndex(where);
    if (index >= 0) return Promise.resolve(queue.items.splice(index, 1)[0]);
    return new Promise((resolve) => queue.waiters.push({ where, resolve }));
  }

  /** Events of `name` received and not taken yet. */
  waiting(name) {
    return this.queues.get(name).items.splice(0);
  }
}

export const CLIENT_EVENTS = ['connecting', 'connected', 'disconnected', 'error'];
export const SUB_EVENTS = [
  'subscribing',
  'subscribed',
  'unsubscribed',
  'publication',
  'join',
  'leave',
  'error',
];

/** The client events of server-side subscriptions. */
export const SERVER_SUB_EVENTS = ['subscribing', 'subscribed', 'unsubscribed', 'publication'];

/** Connect `centrifuge`, recording its events as `who` (also `extra` ones); resolves with
 * the recorder and the connected context. */
export async function connect(centrifuge, who, extra = []) {
  const events = new Recorder(centrifuge, who, [...CLIENT_EVENTS, ...extra]);
  centrifuge.connect();
  const ctx = await events.next('connected');
  return { events, ctx };
}

/** A subscription of `centrifuge` to `channel`, recording its events as `who`. */
export async function subscribe(centrifuge, channel, who, options = {}) {
  const sub = centrifuge.newSubscription(channel, options);
  const events = new Recorder(sub, who, SUB_EVENTS);
  sub.subscribe();
  const ctx = await events.next('subscribed');
  return { sub, events, ctx };
}

/** What a rejected SDK call carried (the server's error code and message). */
export async function failure(promise) {
  try {
    await promise;
  } catch (e) {
    return { code: e.code, message: e.message };
  }
  return null;
}
