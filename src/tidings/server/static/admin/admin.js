// The tidings admin dashboard. Everything shown is set with textContent (never as HTML);
// every POST carries the session's CSRF token.
const csrf = document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);

async function api(method, params = {}) {
  const resp = await fetch(`/admin/api/${method}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(params),
    credentials: "same-origin",
  });
  if (resp.status === 401) location.reload(); // the session ended: back to the login form
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.error || `HTTP ${resp.status}`);
  if (body.error) throw new Error(`${body.error.message} (${body.error.code})`);
  return body.result;
}

function row(tbody, cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    td.textContent = String(cell);
    tr.append(td);
  }
  tbody.append(tr);
  return tr;
}

function item(list, text, limit = 200) {
  const li = document.createElement("li");
  li.textContent = text;
  list.append(li);
  while (list.children.length > limit) list.firstElementChild.remove();
}

// Overview and its chart: rates from the difference of two samples.
const WINDOW = 60;
const series = { pub: [], del: [] };
let last = null;

function draw() {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const top = Math.max(1, ...series.pub, ...series.del);
  ctx.fillStyle = "#888";
  ctx.font = "11px sans-serif";
  ctx.fillText(`${top.toFixed(top < 10 ? 1 : 0)}/s`, 4, 12);
  for (const [key, color] of [["pub", "#2a6fdb"], ["del", "#d9822b"]]) {
    const values = series[key];
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    values.forEach((v, i) => {
      const x = (i / (WINDOW - 1)) * (width - 1);
      const y = height - 2 - (v / top) * (height - 18);
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

async function overview() {
  const resp = await fetch("/admin/api/overview", { credentials: "same-origin" });
  if (resp.status === 401) return location.reload();
  const o = await resp.json();
  $("nodes").textContent = o.nodes.length;
  $("channels-count").textContent = o.channels;
  $("subscriptions").textContent = o.subscriptions;
  $("published").textContent = o.published;
  $("delivered").textContent = o.delivered;
  const tbody = $("connections").querySelector("tbody");
  tbody.replaceChildren();
  for (const [kind, count] of Object.entries(o.connections)) row(tbody, [kind, count]);
  const nodes = $("node-list").querySelector("tbody");
  nodes.replaceChildren();
  for (const n of o.nodes) row(nodes, [n.name, n.num_clients ?? "", n.num_users ?? "", n.num_subs ?? ""]);
  if (last !== null && o.time > last.time) {
    const dt = o.time - last.time;
    const pub = Math.max(0, (o.published - last.published) / dt);
    const del = Math.max(0, (o.delivered - last.delivered) / dt);
    $("pub-rate").textContent = pub.toFixed(1);
    $("del-rate").textContent = del.toFixed(1);
    series.pub.push(pub);
    series.del.push(del);
    if (series.pub.length > WINDOW) { series.pub.shift(); series.del.shift(); }
    draw();
  }
  last = o;
}

// Channels with search, and the inspector.
let inspected = null;
let tail = null;

async function channels() {
  const q = $("channel-search").value.trim();
  const result = await api("channels", { pattern: q ? `*${q}*` : "*" });
  const tbody = $("channel-list").querySelector("tbody");
  tbody.replaceChildren();
  for (const [name, info] of Object.entries(result.channels)) {
    const tr = row(tbody, [name, info.num_clients]);
    tr.dataset.channel = name;
    tr.addEventListener("click", () => inspect(name));
    if (name === inspected) $("subscribers").textContent = info.num_clients;
  }
}

async function inspect(channel) {
  inspected = channel;
  $("inspector").hidden = false;
  $("inspected").textContent = channel;
  $("publish-channel").value = channel;
  const presence = $("presence");
  presence.replaceChildren();
  try {
    const p = await api("presence", { channel });
    for (const [client, info] of Object.entries(p.presence)) item(presence, `${info.user || "(anonymous)"} ${client}`);
    if (!presence.children.length) item(presence, "nobody");
  } catch (err) {
    item(presence, `presence: ${err.message}`);
  }
  const history = $("history");
  history.replaceChildren();
  try {
    const h = await api("history", { channel, limit: 20, reverse: true });
    for (const pub of h.publications.reverse()) item(history, `${pub.offset}: ${JSON.stringify(pub.data)}`);
  } catch (err) {
    item(history, `history: ${err.message}`);
  }
  $("tail").replaceChildren();
  if (tail) tail.close();
  tail = new EventSource(`/sse/${encodeURIComponent(channel)}`);
  tail.onmessage = (event) => item($("tail"), event.data);
  tail.onerror = () => item($("tail"), "(live tail interrupted; reconnecting)");
  channels();
}

$("channel-search").addEventListener("input", () => channels());

$("publish-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const out = $("publish-result");
  let data;
  try {
    data = JSON.parse($("publish-data").value);
  } catch {
    out.textContent = "data is not valid JSON";
    return;
  }
  try {
    const r = await api("publish", { channel: $("publish-channel").value, data });
    out.textContent = `published at offset ${r.offset}`;
  } catch (err) {
    out.textContent = `not published: ${err.message}`;
  }
});

$("disconnect-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const out = $("disconnect-result");
  try {
    await api("disconnect", { user: $("disconnect-user").value });
    out.textContent = "disconnected";
  } catch (err) {
    out.textContent = `not disconnected: ${err.message}`;
  }
});

overview();
channels();
setInterval(overview, 1000);
setInterval(channels, 3000);
