// Stand-ins for the browser's WebSocket, EventSource and fetch, driven by the tests.

export class FakeWebSocket {
  static all = [];
  constructor(url) {
    this.url = new URL(url);
    this.readyState = 0;
    this.sent = [];
    FakeWebSocket.all.push(this);
  }
  send(text) {
    this.sent.push(text);
  }
  close() {
    this.readyState = 3;
  }
  // what the server does
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  deliver(obj) {
    this.onmessage?.({ data: JSON.stringify(obj) });
  }
  drop(code = 1006, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
}

export class FakeEventSource {
  static all = [];
  constructor(url, init) {
    this.url = new URL(url);
    this.init = init;
    this.listeners = new Map();
    this.closed = false;
    FakeEventSource.all.push(this);
  }
  addEventListener(name, fn) {
    this.listeners.set(name, fn);
  }
  close() {
    this.closed = true;
  }
  open() {
    this.onopen?.({});
  }
  // An event named `event` reaches only its listener, as in a browser.
  deliver(obj, event = "message") {
    const e = { data: JSON.stringify(obj) };
    if (event === "message") this.onmessage?.(e);
    else this.listeners.get(event)?.(e);
  }
  fail() {
    this.onerror?.({});
  }
}

/** A fetch whose answers the test gives: `next()` waits for the next request. */
export function fakeFetch() {
  const requests = [];
  const waiting = [];
  const fetch = (url, init) =>
    new Promise((resolve, reject) => {
      const req = { url: new URL(url), init, resolve, reject };
      init?.signal?.addEventListener("abort", () => reject(new Error("aborted")));
      const w = waiting.shift();
      if (w) w(req);
      else requests.push(req);
    });
  fetch.next = () =>
    new Promise((resolve) => {
      const r = requests.shift();
      if (r) resolve(r);
      else waiting.push(resolve);
    });
  return fetch;
}

export function jsonResponse(status, body) {
  return { ok: status >= 200 && status < 300, status, json: async () => body };
}

export function envelope(channel, offset, data, event, epoch = "E1") {
  const msg = { channel, offset, epoch, data };
  if (event) msg.event = event;
  return msg;
}
