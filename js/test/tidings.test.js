import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { Positions, backoff, parsePositions, subscribe } from "../../src/tidings/server/static/tidings.js";
import { FakeEventSource, FakeWebSocket, envelope, fakeFetch, jsonResponse } from "./fakes.js";

const URL_ = "http://hub.test:8000";

beforeEach(() => {
  FakeWebSocket.all = [];
  FakeEventSource.all = [];
  mock.timers.enable({ apis: ["setTimeout"] });
});
afterEach(() => mock.timers.reset());

function recorder() {
  const got = { messages: [], states: [], gaps: [], notices: [] };
  return {
    got,
    options: {
      url: URL_,
      onMessage: (data, meta) => got.messages.push([meta.channel, meta.offset, data, meta.transport]),
      onState: (state, info) => got.states.push([state, info.transport ?? info.to ?? null]),
      onGap: (info) => got.gaps.push(info),
      onNotice: (n) => got.notices.push(n),
      WebSocket: FakeWebSocket,
      EventSource: FakeEventSource,
      random: () => 0,
    },
  };
}

test("backoff doubles up to its cap, with half of it random", () => {
  assert.equal(backoff(0, { min: 500, max: 30000 }, () => 0), 250);
  assert.equal(backoff(0, { min: 500, max: 30000 }, () => 1), 500);
  assert.equal(backoff(3, { min: 500, max: 30000 }, () => 0), 2000);
  assert.equal(backoff(20, { min: 500, max: 30000 }, () => 1), 30000);
  assert.equal(backoff(20, { min: 500, max: 30000 }, () => 0), 15000);
  for (let i = 0; i < 100; i++) {
    const d = backoff(2);
    assert.ok(d >= 1000 && d <= 2000, String(d));
  }
});

test("positions: the next one is new, earlier ones duplicates, a hole a skip", () => {
  const p = new Positions();
  assert.equal(p.accept("a", 5, "E"), "new");
  assert.equal(p.accept("a", 5, "E"), "dup");
  assert.equal(p.accept("a", 4, "E"), "dup");
  assert.equal(p.accept("a", 6, "E"), "new");
  assert.equal(p.accept("a", 8, "E"), "skip");
  assert.equal(p.accept("a", 1, "F"), "new"); // another epoch
  p.gap("a", 10, "F");
  assert.equal(p.accept("a", 10, "F"), "new");
  p.note("a", 3, "F"); // behind what was delivered: kept
  p.note("b:1", 7, "G");
  assert.equal(p.toString(), "a:10:F,b:1:7:G");
  assert.equal(p.accept("c", undefined, undefined), "new"); // no positions: always new
});

test("parsePositions takes channel names with colons", () => {
  const m = parsePositions("news:7:k3x,chat:1:3:k3x,bad,x:y:z");
  assert.deepEqual([...m], [
    ["news", { offset: 7, epoch: "k3x" }],
    ["chat:1", { offset: 3, epoch: "k3x" }],
  ]);
});

test("WebSocket: reconnects after a drop from the last position, drops what it saw twice", () => {
  const { got, options } = recorder();
  const sub = subscribe(["news", "chat:1"], options);
  const ws = FakeWebSocket.all[0];
  assert.equal(ws.url.href, "ws://hub.test:8000/ws/news,chat%3A1?positions=1");
  ws.open();
  ws.deliver({ notice: "position", channel: "chat:1", offset: 0, epoch: "E1" });
  ws.deliver(envelope("news", 1, "a"));
  ws.deliver(envelope("news", 2, "b"));
  ws.deliver({ notice: "position", channel: "news", offset: 2, epoch: "E1" });
  ws.drop(1001, "shutting down");
  assert.deepEqual(got.states.at(-1), ["closed", "ws"]);
  assert.equal(FakeWebSocket.all.length, 1);
  mock.timers.tick(500); // attempt 1 with random 0: 500 ms
  const again = FakeWebSocket.all[1];
  assert.ok(again, "reconnected");
  assert.equal(again.url.searchParams.get("last_event_id"), "chat:1:0:E1,news:2:E1");
  again.open();
  // A server that replays from before the position: delivered once anyway.
  again.deliver(envelope("news", 2, "b"));
  again.deliver(envelope("news", 3, "c"));
  again.deliver(envelope("chat:1", 1, "x"));
  assert.deepEqual(got.messages.map((m) => m.slice(0, 3)), [
    ["news", 1, "a"],
    ["news", 2, "b"],
    ["news", 3, "c"],
    ["chat:1", 1, "x"],
  ]);
  assert.equal(sub.duplicates, 1);
  assert.deepEqual(got.states.map((s) => s[0]), ["connecting", "open", "closed", "connecting", "open"]);
  assert.equal(sub.send({ text: "hi" }), true);
  assert.deepEqual(again.sent, ['{"text":"hi"}']);
  sub.close();
  assert.deepEqual(got.states.at(-1), ["closed", "ws"]);
  assert.equal(sub.send("late"), false);
});

test("a gap notice is surfaced and moves the position", () => {
  const { got, options } = recorder();
  subscribe("news", { ...options, since: "news:3:E1" });
  const ws = FakeWebSocket.all[0];
  assert.equal(ws.url.searchParams.get("last_event_id"), "news:3:E1");
  ws.open();
  ws.deliver({ notice: "gap", channel: "news", reason: "history", expected: 4, resumed_from: 9, epoch: "E1" });
  ws.deliver(envelope("news", 9, "i"));
  assert.equal(got.gaps.length, 1);
  assert.equal(got.gaps[0].resumed_from, 9);
  assert.deepEqual(got.messages.map((m) => m[1]), [9]);
});

test("backoff grows while reconnects fail, and every transport is tried again", () => {
  const { got, options } = recorder();
  subscribe("news", { ...options, transports: ["ws", "sse"] });
  FakeWebSocket.all[0].drop(1006);
  assert.deepEqual(got.states.at(-1), ["connecting", "sse"]);
  FakeEventSource.all[0].fail();
  // both failed before opening: a pause, then the list again from the start
  assert.equal(got.states.at(-1)[0], "closed");
  mock.timers.tick(499);
  assert.equal(FakeWebSocket.all.length, 1);
  mock.timers.tick(1);
  assert.equal(FakeWebSocket.all.length, 2);
  FakeWebSocket.all[1].drop(1006);
  FakeEventSource.all[1].fail();
  mock.timers.tick(999);
  assert.equal(FakeWebSocket.all.length, 2);
  mock.timers.tick(1);
  assert.equal(FakeWebSocket.all.length, 3);
});

test("falls back to SSE when the WebSocket fails to open, and stays there", () => {
  const { got, options } = recorder();
  const sub = subscribe("news", { ...options, events: ["alert"] });
  FakeWebSocket.all[0].drop(1006);
  assert.deepEqual(got.states, [
    ["connecting", "ws"],
    ["fallback", "sse"],
    ["connecting", "sse"],
  ]);
  const es = FakeEventSource.all[0];
  assert.equal(es.url.pathname, "/sse/news");
  es.open();
  es.deliver(envelope("news", 1, "one"));
  es.deliver(envelope("news", 2, "two", "alert"), "alert");
  es.deliver({ notice: "deleted", channel: "news" }, "tidings.deleted");
  assert.deepEqual(got.messages.map((m) => [m[1], m[3]]), [[1, "sse"], [2, "sse"]]);
  assert.equal(got.notices[0].notice, "deleted");
  assert.equal(sub.send("x"), false);
  es.fail(); // dropped after opening: SSE again, from the position
  assert.equal(es.closed, true);
  mock.timers.tick(500);
  assert.equal(FakeWebSocket.all.length, 1);
  assert.equal(FakeEventSource.all[1].url.searchParams.get("last_event_id"), "news:2:E1");
});

test("SSE: a publication under an unheard event name is fetched by long-poll, in order", async () => {
  const { got, options } = recorder();
  const fetch = fakeFetch();
  subscribe("news", { ...options, transports: ["sse"], fetch });
  const es = FakeEventSource.all[0];
  es.open();
  es.deliver(envelope("news", 1, "one"));
  es.deliver(envelope("news", 2, "unheard", "surprise"), "surprise"); // no listener: lost
  es.deliver(envelope("news", 3, "three"));
  const req = await fetch.next();
  assert.equal(req.url.pathname, "/lp/news");
  assert.equal(req.url.searchParams.get("last_event_id"), "news:1:E1");
  req.resolve(jsonResponse(200, {
    id: "news:3:E1",
    messages: [envelope("news", 2, "unheard", "surprise"), envelope("news", 3, "three")],
  }));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(got.messages.map((m) => m[2]), ["one", "unheard", "three"]);
  const reopened = FakeEventSource.all[1];
  assert.equal(reopened.url.searchParams.get("last_event_id"), "news:3:E1");
  reopened.open();
  reopened.deliver(envelope("news", 4, "heard now", "surprise"), "surprise");
  assert.deepEqual(got.messages.map((m) => m[2]), ["one", "unheard", "three", "heard now"]);
});

test("long-poll: each request carries the last answer's position; gaps come first", async () => {
  const { got, options } = recorder();
  const fetch = fakeFetch();
  const sub = subscribe("news", { ...options, transports: ["lp"], fetch, last: 5 });
  let req = await fetch.next();
  assert.equal(req.url.href, "http://hub.test:8000/lp/news?last=5");
  assert.equal(req.init.credentials, "same-origin");
  req.resolve(jsonResponse(200, {
    id: "news:12:E1",
    messages: [envelope("news", 11, "k"), envelope("news", 12, "l")],
    notices: [{ notice: "gap", channel: "news", reason: "history", expected: 1, resumed_from: 11, epoch: "E1" }],
  }));
  req = await fetch.next();
  assert.equal(req.url.searchParams.get("last_event_id"), "news:12:E1");
  assert.deepEqual(got.messages.map((m) => m[1]), [11, 12]);
  assert.equal(got.gaps.length, 1);
  assert.equal(sub.state, "open");
  // An empty answer after longpoll_timeout: the position stays.
  req.resolve(jsonResponse(200, { id: "news:12:E1", messages: [] }));
  req = await fetch.next();
  assert.equal(req.url.searchParams.get("last_event_id"), "news:12:E1");
  // The network fails: reconnect after the pause, from the same position.
  req.reject(new TypeError("network"));
  await new Promise((r) => setImmediate(r));
  assert.equal(sub.state, "closed");
  mock.timers.tick(500);
  req = await fetch.next();
  assert.equal(req.url.searchParams.get("last_event_id"), "news:12:E1");
  sub.close();
});

test("long-poll: the session of an answer goes back with every later poll, reconnects too", async () => {
  const { got, options } = recorder();
  const fetch = fakeFetch();
  const sub = subscribe("news", { ...options, transports: ["lp"], fetch });
  let req = await fetch.next();
  assert.equal(req.url.searchParams.get("session"), null);
  const hello = { notice: "message", channel: "", data: { to: "you" } };
  req.resolve(jsonResponse(200, { id: "news:0:E1", messages: [], session: "S1", notices: [hello] }));
  req = await fetch.next();
  assert.equal(req.url.searchParams.get("session"), "S1");
  assert.deepEqual(got.notices, [hello]);
  // The server started another session (the old one expired): the new one is used.
  req.resolve(jsonResponse(200, { id: "news:0:E1", messages: [], session: "S2" }));
  req = await fetch.next();
  assert.equal(req.url.searchParams.get("session"), "S2");
  req.reject(new TypeError("network"));
  await new Promise((r) => setImmediate(r));
  mock.timers.tick(500);
  req = await fetch.next();
  assert.equal(req.url.searchParams.get("session"), "S2");
  sub.close();
});

test("long-poll refused with 403: closed for good, with the server's reason", async () => {
  const { got, options } = recorder();
  const fetch = fakeFetch();
  const sub = subscribe("news", { ...options, transports: ["lp", "stream"], fetch, withCredentials: true });
  const req = await fetch.next();
  assert.equal(req.init.credentials, "include");
  req.resolve(jsonResponse(403, { error: "log in first", code: 4001 }));
  await new Promise((r) => setImmediate(r));
  assert.equal(sub.state, "closed");
  assert.deepEqual(got.states.at(-1), ["closed", "lp"]);
  mock.timers.tick(60000);
  assert.equal(got.states.at(-1)[0], "closed");
});

test("stream: NDJSON lines split anywhere across chunks", async () => {
  const { got, options } = recorder();
  const fetch = fakeFetch();
  subscribe("news", { ...options, transports: ["stream"], fetch });
  const req = await fetch.next();
  assert.equal(req.url.pathname, "/stream/news");
  assert.equal(req.url.searchParams.get("positions"), "1");
  const text = [envelope("news", 1, "é"), envelope("news", 2, { n: 2 })].map((m) => JSON.stringify(m) + "\n").join("");
  const bytes = new TextEncoder().encode(text);
  const chunks = [bytes.slice(0, 7), bytes.slice(7, 40), bytes.slice(40)];
  req.resolve({
    ok: true,
    status: 200,
    body: {
      getReader: () => ({ read: async () => (chunks.length ? { value: chunks.shift(), done: false } : { done: true }) }),
    },
  });
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
  assert.deepEqual(got.messages.map((m) => m[2]), ["é", { n: 2 }]);
  assert.deepEqual(got.states.at(-1), ["closed", "stream"]); // the body ended: reconnect
});

test("4404 (the channel was deleted) and a 4500 code close for good", () => {
  for (const code of [4404, 4501]) {
    const { got, options } = recorder();
    subscribe("news", options);
    const ws = FakeWebSocket.all.at(-1);
    ws.open();
    ws.drop(code, "gone");
    assert.deepEqual(got.states.at(-1), ["closed", "ws"]);
    mock.timers.tick(60000);
    assert.equal(got.states.at(-1)[0], "closed");
  }
  assert.equal(FakeWebSocket.all.length, 2);
});

test("since: an offset for the first request only, then the positions", () => {
  const { options } = recorder();
  subscribe("news", { ...options, since: 0 });
  const ws = FakeWebSocket.all[0];
  assert.equal(ws.url.searchParams.get("since"), "0");
  ws.open();
  ws.deliver(envelope("news", 1, "a"));
  ws.drop(1006);
  mock.timers.tick(500);
  const again = FakeWebSocket.all[1];
  assert.equal(again.url.searchParams.get("since"), null);
  assert.equal(again.url.searchParams.get("last_event_id"), "news:1:E1");
});

test("SSE: when the missing publications can't be fetched, a gap says so", async () => {
  const { got, options } = recorder();
  const fetch = fakeFetch();
  subscribe("news", { ...options, transports: ["sse"], fetch });
  const es = FakeEventSource.all[0];
  es.open();
  es.deliver(envelope("news", 1, "one"));
  es.deliver(envelope("news", 3, "three"));
  (await fetch.next()).resolve(jsonResponse(503, { error: "unavailable" }));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(got.gaps.map((g) => [g.channel, g.reason, g.expected]), [["news", "unfillable", 2]]);
  const reopened = FakeEventSource.all[1];
  assert.equal(reopened.url.searchParams.get("last_event_id"), null); // from now on
  reopened.open();
  reopened.deliver(envelope("news", 4, "four"));
  assert.deepEqual(got.messages.map((m) => m[2]), ["one", "four"]);
});

test("a callback that throws doesn't break the bookkeeping", () => {
  const { options } = recorder();
  const seen = [];
  subscribe("news", {
    ...options,
    onMessage: (data) => {
      seen.push(data);
      throw new Error("application bug");
    },
  });
  const ws = FakeWebSocket.all[0];
  ws.open();
  ws.deliver(envelope("news", 1, "a"));
  ws.deliver(envelope("news", 2, "b"));
  assert.deepEqual(seen, ["a", "b"]);
  assert.throws(() => mock.timers.tick(0), /application bug/);
});
