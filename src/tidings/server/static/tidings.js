// tidings.js: a browser client for the tidings hub's simple endpoints (docs/javascript.md).
//
//   import { subscribe } from "/tidings.js";
//   const sub = subscribe(["news"], { onMessage(data, meta) { ... } });
//
// One subscription holds one connection: WebSocket, else Server-Sent Events, else long-poll,
// else an HTTP stream. It keeps each channel's last position (offset and epoch) and resumes
// from it on every reconnect, on whichever transport, so that every publication reaches
// onMessage once and in order; what history can no longer give is reported by onGap.
// No dependencies; the browser's WebSocket, EventSource and fetch (injectable for tests).

export const TRANSPORTS = Object.freeze(["ws", "sse", "lp", "stream"]);

// Notices the server sends as SSE events named tidings.<kind> (docs/endpoints.md).
const NOTICES = ["gap", "position", "deleted", "message", "slow", "shutdown", "error", "disconnect"];

// WebSocket close codes after which reconnecting can't help (docs/endpoints.md, close codes).
function finalCode(code) {
  return code === 1002 || code === 1003 || code === 1007 || code === 1009 || code === 4404 ||
    (code >= 4500 && code <= 4999);
}

/** The delay before reconnect attempt `attempt` (0, 1, ...): exponential, capped, with
 * "equal jitter" (half fixed, half random) so that clients cut off together don't all
 * come back in the same instant. */
export function backoff(attempt, { min = 500, max = 30000 } = {}, random = Math.random) {
  const ceiling = Math.min(max, min * 2 ** Math.min(attempt, 30));
  return ceiling / 2 + random() * (ceiling / 2);
}

/** Splits a position text `ch:offset:epoch,...` (channel names may hold colons). */
export function parsePositions(text) {
  const out = new Map();
  for (const part of String(text || "").split(",")) {
    const b = part.lastIndexOf(":");
    const a = part.lastIndexOf(":", b - 1);
    if (a <= 0) continue;
    const offset = Number(part.slice(a + 1, b));
    if (Number.isInteger(offset) && offset >= 0) {
      out.set(part.slice(0, a), { offset, epoch: part.slice(b + 1) });
    }
  }
  return out;
}

/** Where each channel stands: the offset and epoch of the last publication delivered.
 * `accept` says whether a publication is the next one ("new"), one already delivered
 * ("dup") or one after a hole ("skip"). */
export class Positions {
  constructor() {
    this.map = new Map();
  }

  accept(channel, offset, epoch) {
    if (typeof offset !== "number") return "new"; // a channel without positions
    const known = this.map.get(channel);
    if (known && known.epoch === epoch) {
      if (offset <= known.offset) return "dup";
      if (offset > known.offset + 1) return "skip";
    }
    // Unknown so far, the next one, or a new epoch (the server tells a lost history by a
    // gap notice first; without a position to resume there is nothing to compare).
    this.map.set(channel, { offset, epoch });
    return "new";
  }

  /** A gap notice: the channel continues at `resumed_from` in `epoch`. */
  gap(channel, resumedFrom, epoch) {
    this.map.set(channel, { offset: resumedFrom - 1, epoch });
  }

  /** A position the server announced (position notice, long-poll id): adopt it unless
   * what was delivered is already past it. */
  note(channel, offset, epoch) {
    const known = this.map.get(channel);
    if (!known || known.epoch !== epoch || offset > known.offset) {
      this.map.set(channel, { offset, epoch });
    }
  }

  get size() {
    return this.map.size;
  }

  toString() {
    return [...this.map].map(([ch, p]) => `${ch}:${p.offset}:${p.epoch}`).join(",");
  }
}

function noop() {}

/** Subscribes to `channels` (a name or a list) on the hub at `options.url`. */
export function subscribe(channels, options = {}) {
  return new Subscription(channels, options);
}

export class Subscription {
  constructor(channels, options = {}) {
    this.channels = typeof channels === "string" ? [channels] : [...channels];
    if (this.channels.length === 0) throw new TypeError("subscribe: no channel given");
    const o = options;
    this.base = hubBase(o.url);
    this.onMessage = o.onMessage || noop;
    this.onState = o.onState || noop;
    this.onGap = o.onGap || noop;
    this.onNotice = o.onNotice || noop;
    this.transports = (o.transports || TRANSPORTS).filter((t) => TRANSPORTS.includes(t));
    if (this.transports.length === 0) throw new TypeError("subscribe: no known transport");
    this.events = new Set(o.events || []);
    this.withCredentials = Boolean(o.withCredentials);
    this.backoffOptions = { min: o.minDelay ?? 500, max: o.maxDelay ?? 30000 };
    this.openTimeout = o.openTimeout ?? 10000;
    this.random = o.random || Math.random;
    this.WebSocket = o.WebSocket || globalThis.WebSocket;
    this.EventSource = o.EventSource || globalThis.EventSource;
    this.fetch = o.fetch || ((...args) => globalThis.fetch(...args));
    this.positions = new Positions();
    for (const [ch, p] of parsePositions(typeof o.since === "string" ? o.since : "")) {
      if (this.channels.includes(ch)) this.positions.map.set(ch, p);
    }
    this.since = typeof o.since === "number" ? o.since : null;
    this.last = typeof o.last === "number" ? o.last : null;
    this.state = "connecting";
    this.transport = null; // the name of the transport in use
    this.duplicates = 0; // publications received twice and dropped
    // The long-poll session the server gave (sent back with every poll, so that messages
    // sent to this client between two polls reach it).
    this.lpSession = null;
    this.index = 0;
    this.attempt = 0;
    this.current = null;
    this.timer = null;
    this.closed = false;
    this.connect();
  }

  /** The position text to resume from: `ch:offset:epoch,...`. */
  get position() {
    return this.positions.toString();
  }

  /** Sends `data` (a string as it is, anything else as JSON) over the WebSocket; false
   * when the subscription is not on an open WebSocket. Where hooks allow it, the server
   * publishes it or hands it to on_message hooks (docs/hooks.md). */
  send(data) {
    const t = this.current;
    if (!t || !t.opened || typeof t.send !== "function") return false;
    return t.send(typeof data === "string" ? data : JSON.stringify(data));
  }

  /** Closes the connection for good. */
  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    this.drop();
    this.setState("closed", { transport: this.transport, reason: "closed by the client", retry: false });
  }

  setState(state, info) {
    this.state = state;
    try {
      this.onState(state, info);
    } catch (exc) {
      reportLater(exc);
    }
  }

  drop() {
    const t = this.current;
    this.current = null;
    if (t) t.close();
  }

  connect() {
    if (this.closed) return;
    const name = this.transports[this.index];
    this.transport = name;
    this.setState("connecting", { transport: name, attempt: this.attempt });
    const make = { ws: openWebSocket, sse: openEventSource, lp: openLongPoll, stream: openStream }[name];
    const t = { name, opened: false, openedAt: 0, close: noop };
    this.current = t;
    try {
      make(this, t);
    } catch (exc) {
      // e.g. no WebSocket in this environment: as if it had failed to open
      queueMicrotask(() => this.failed(t, { reason: String(exc && exc.message) }));
    }
  }

  url(path, query) {
    const u = new URL(path + "/" + this.channels.map(encodeURIComponent).join(","), this.base);
    if (this.positions.size > 0) u.searchParams.set("last_event_id", this.position);
    else if (this.since !== null) u.searchParams.set("since", String(this.since));
    if (this.last !== null) u.searchParams.set("last", String(this.last));
    if (path === "lp" && this.lpSession) u.searchParams.set("session", this.lpSession);
    for (const [k, v] of Object.entries(query || {})) u.searchParams.set(k, v);
    return u;
  }

  // --- what transports report; `t` is checked so that a replaced one is ignored ---

  opened(t) {
    if (t !== this.current || t.opened) return;
    t.opened = true;
    t.openedAt = Date.now();
    this.setState("open", { transport: t.name });
  }

  /** One envelope or notice, decoded. */
  frame(t, msg) {
    if (t !== this.current || msg === null || typeof msg !== "object") return;
    if (!t.opened) this.opened(t);
    if (typeof msg.notice === "string") {
      this.notice(t, msg);
      return;
    }
    if (typeof msg.channel !== "string") return;
    if (msg.event) this.learnEvent(msg.event);
    const verdict = this.positions.accept(msg.channel, msg.offset, msg.epoch);
    if (verdict === "dup") {
      this.duplicates += 1;
      return;
    }
    if (verdict === "skip") {
      // Only SSE skips (a publication whose event name had no listener yet); anywhere
      // else it would be a server bug. Either way: fetch what is missing, in order.
      this.resync(t);
      return;
    }
    const meta = {
      channel: msg.channel,
      event: msg.event ?? null,
      offset: msg.offset ?? null,
      epoch: msg.epoch ?? null,
      id: typeof msg.offset === "number" ? `${msg.channel}:${msg.offset}:${msg.epoch}` : null,
      transport: t.name,
    };
    try {
      this.onMessage(msg.data, meta);
    } catch (exc) {
      reportLater(exc);
    }
  }

  notice(t, msg) {
    if (msg.notice === "gap" && typeof msg.resumed_from === "number") {
      this.positions.gap(msg.channel, msg.resumed_from, msg.epoch);
      try {
        this.onGap(msg);
      } catch (exc) {
        reportLater(exc);
      }
      return;
    }
    if (msg.notice === "position" && typeof msg.offset === "number") {
      this.positions.note(msg.channel, msg.offset, msg.epoch);
      return;
    }
    if (msg.notice === "disconnect" && finalCode(msg.code)) {
      t.final = { code: msg.code, reason: msg.reason };
    }
    try {
      this.onNotice(msg);
    } catch (exc) {
      reportLater(exc);
    }
  }

  learnEvent(name) {
    if (this.events.has(name)) return;
    this.events.add(name);
    const t = this.current;
    if (t && t.listen) t.listen(name);
  }

  /** Fetches what came between the last delivered position and now with one long-poll
   * request, then reopens the same transport after it. */
  async resync(t) {
    if (t.resyncing) return;
    t.resyncing = true;
    t.close();
    try {
      const response = await this.fetch(this.url("lp"), this.fetchInit());
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      if (t !== this.current) return;
      this.longPollBody(t, await response.json());
    } catch {
      // Can't fill it in: say so, and go on from what arrives next.
      if (t !== this.current) return;
      this.skipUnfillable();
    }
    if (t !== this.current) return;
    this.drop();
    this.connect();
  }

  skipUnfillable() {
    for (const ch of this.channels) {
      const p = this.positions.map.get(ch);
      if (p) this.onGap({ notice: "gap", channel: ch, reason: "unfillable", expected: p.offset + 1 });
      this.positions.map.delete(ch);
    }
  }

  /** A long-poll answer: gaps first (the server says them before anything else), then the
   * messages, the other notices, and the position to continue from. */
  longPollBody(t, body) {
    if (typeof body.session === "string" && body.session) this.lpSession = body.session;
    const notices = Array.isArray(body.notices) ? body.notices : [];
    const early = (n) => n && (n.notice === "gap" || n.notice === "position");
    for (const n of notices) if (early(n)) this.frame(t, n);
    for (const m of Array.isArray(body.messages) ? body.messages : []) this.frame(t, m);
    for (const n of notices) if (!early(n)) this.frame(t, n);
    if (t !== this.current) return;
    for (const [ch, p] of parsePositions(body.id)) {
      if (this.channels.includes(ch)) this.positions.note(ch, p.offset, p.epoch);
    }
  }

  fetchInit(signal) {
    return {
      cache: "no-store",
      credentials: this.withCredentials ? "include" : "same-origin",
      signal,
    };
  }

  /** The transport ended before opening (`fallback` to the next one), or after. */
  failed(t, info = {}) {
    if (t !== this.current || this.closed) return;
    this.current = null;
    t.close();
    const final = t.final || info.final;
    if (final) {
      this.closed = true;
      this.setState("closed", { transport: t.name, ...final, retry: false });
      return;
    }
    if (!t.opened && this.index + 1 < this.transports.length) {
      const to = this.transports[this.index + 1];
      this.setState("fallback", { from: t.name, to, ...info });
      this.index += 1;
      this.connect();
      return;
    }
    if (!t.opened) {
      this.index = 0; // every transport failed: start the list again after a pause
      this.attempt += 1;
    } else if (Date.now() - t.openedAt >= 5000) {
      this.attempt = 0; // it had worked for a while: reconnect soon
    } else {
      this.attempt += 1;
    }
    const delay = backoff(this.attempt, this.backoffOptions, this.random);
    this.setState("closed", { transport: t.name, ...info, retry: true, delay });
    this.timer = setTimeout(() => this.connect(), delay);
  }
}

function hubBase(url) {
  let base = url;
  if (!base) {
    // Default: the hub that served this module.
    base = new URL(".", import.meta.url).href;
  }
  const u = new URL(base, globalThis.location ? globalThis.location.href : undefined);
  if (!u.pathname.endsWith("/")) u.pathname += "/";
  return u.href;
}

function reportLater(exc) {
  // An application callback threw: don't let it break the connection's bookkeeping.
  setTimeout(() => {
    throw exc;
  }, 0);
}

function parse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function openTimer(sub, t) {
  const timer = setTimeout(() => {
    if (!t.opened) sub.failed(t, { reason: "timed out opening" });
  }, sub.openTimeout);
  return () => clearTimeout(timer);
}

// --- the four transports: each fills in `t` (close, and send/listen where it can) ---

function openWebSocket(sub, t) {
  if (!sub.WebSocket) throw new Error("no WebSocket");
  const u = sub.url("ws", { positions: "1" });
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  const ws = new sub.WebSocket(u.href);
  const cancel = openTimer(sub, t);
  t.close = () => {
    cancel();
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(1000);
    } catch {
      // already closing
    }
  };
  t.send = (text) => {
    if (ws.readyState !== 1) return false;
    ws.send(text);
    return true;
  };
  ws.onopen = () => {
    cancel();
    sub.opened(t);
  };
  ws.onmessage = (e) => sub.frame(t, parse(e.data));
  ws.onerror = noop; // a close event follows
  ws.onclose = (e) => {
    const info = { code: e.code, reason: e.reason || "" };
    if (finalCode(e.code)) info.final = { code: e.code, reason: e.reason || "" };
    sub.failed(t, info);
  };
}

function openEventSource(sub, t) {
  if (!sub.EventSource) throw new Error("no EventSource");
  const u = sub.url("sse", { positions: "1" });
  const es = new sub.EventSource(u.href, { withCredentials: sub.withCredentials });
  const cancel = openTimer(sub, t);
  const heard = new Set();
  const receive = (e) => {
    if (typeof e.data === "string") sub.frame(t, parse(e.data));
  };
  t.listen = (name) => {
    // "message" is what onmessage gets; error/open are the EventSource's own events
    if (name === "message" || name === "error" || name === "open" || heard.has(name)) return;
    heard.add(name);
    es.addEventListener(name, receive);
  };
  t.close = () => {
    cancel();
    es.onopen = es.onmessage = es.onerror = null;
    es.close();
  };
  es.onopen = () => {
    cancel();
    sub.opened(t);
  };
  es.onmessage = receive;
  // EventSource would reconnect by itself, with the position of its first URL: close it
  // and reconnect from what was delivered instead.
  es.onerror = () => sub.failed(t, { reason: "event stream failed" });
  for (const kind of NOTICES) t.listen("tidings." + kind);
  for (const name of sub.events) t.listen(name);
}

// Status codes that say the request itself is refused: another transport won't help.
function refused(status) {
  return status === 400 || status === 403 || status === 404;
}

async function refusal(response) {
  let reason = `HTTP ${response.status}`;
  try {
    const body = await response.json();
    if (body && typeof body.error === "string") reason = body.error;
  } catch {
    // not JSON
  }
  return { final: { status: response.status, reason } };
}

function openLongPoll(sub, t) {
  const abort = new AbortController();
  let done = false;
  t.close = () => {
    done = true;
    abort.abort();
  };
  // A poll may wait for longpoll_timeout before its first answer; a request that the
  // network hasn't refused within a moment counts as open.
  const grace = setTimeout(() => sub.opened(t), 1000);
  const poll = async () => {
    while (!done) {
      let response;
      try {
        response = await sub.fetch(sub.url("lp").href, sub.fetchInit(abort.signal));
      } catch {
        if (!done) sub.failed(t, { reason: "long-poll request failed" });
        return;
      }
      if (done) return;
      if (!response.ok) {
        const info = refused(response.status)
          ? await refusal(response)
          : { status: response.status, reason: `HTTP ${response.status}` };
        sub.failed(t, info);
        return;
      }
      let body;
      try {
        body = await response.json();
      } catch {
        if (!done) sub.failed(t, { reason: "long-poll answer unreadable" });
        return;
      }
      if (done) return;
      clearTimeout(grace);
      sub.opened(t);
      sub.longPollBody(t, body);
      if (t.final) {
        sub.failed(t, {});
        return;
      }
    }
  };
  poll().finally(() => clearTimeout(grace));
}

function openStream(sub, t) {
  const abort = new AbortController();
  let done = false;
  const cancel = openTimer(sub, t);
  t.close = () => {
    done = true;
    cancel();
    abort.abort();
  };
  const read = async () => {
    const response = await sub.fetch(sub.url("stream", { positions: "1" }).href, sub.fetchInit(abort.signal));
    if (!response.ok) {
      sub.failed(t, refused(response.status) ? await refusal(response) : { status: response.status });
      return;
    }
    cancel();
    sub.opened(t);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done: end } = await reader.read();
      if (done) return;
      if (end) break;
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.trim()) sub.frame(t, parse(line));
        if (done || t !== sub.current) return;
      }
    }
    sub.failed(t, { reason: "stream ended" });
  };
  read().catch(() => {
    if (!done) sub.failed(t, { reason: "stream failed" });
  });
}
