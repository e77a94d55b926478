"""The admin listener's status page: one self-contained HTML document (inline CSS and JS,
nothing fetched from elsewhere). It holds no state: the script reads the admin token
from the URL fragment (``#token=...``, which browsers never send) or from its form, keeps
it in ``sessionStorage``, and polls ``GET /health`` with it every 2 seconds. Every value
from ``/health`` reaches the page as text nodes, never as markup."""

PAGE: str = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>failover-proxy status</title>
<link rel="icon" href="data:,">
<style>
:root { --ok: #1a7f37; --warn: #b26a00; --bad: #c62828; --mute: #6b7280; --cache: #2f6fb0; }
body { margin: 1.5rem; font: 14px/1.4 system-ui, sans-serif; color: #111; background: #fafafa; }
h1 { font-size: 1.3rem; margin: 0 0 .3rem; }
h2 { font-size: 1.05rem; margin: 1.4rem 0 .4rem; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #e5e7eb; }
th { background: #f3f4f6; font-weight: 600; }
.badge { display: inline-block; padding: 0 .45rem; border-radius: .6rem; color: #fff; }
.ok { background: var(--ok); } .warn { background: var(--warn); }
.bad { background: var(--bad); } .mute { background: var(--mute); }
.cache { background: var(--cache); }
.bar { display: flex; width: 10rem; height: .6rem; background: #e5e7eb; margin-bottom: .2rem; }
.note { color: var(--mute); }
#message { padding: .5rem .8rem; border-radius: .3rem; background: #fde8e8; color: var(--bad); }
form { margin: .6rem 0; }
</style>
</head>
<body>
<h1>failover-proxy <span id="status" class="badge mute" data-state="unknown">unknown</span></h1>
<div class="note">Last updated: <span id="updated">never</span> <span id="about"></span></div>
<p id="message" data-kind="" hidden></p>
<form id="token-form">
  <label>Admin token <input id="token" type="password" autocomplete="off" required></label>
  <button type="submit">Use this token</button>
</form>
<h2>Routes</h2>
<table><thead><tr><th>Route</th><th>Health</th><th>Upstreams, in order</th>
<th>Served in the last minute</th><th>Requests, last minute</th></tr></thead>
<tbody id="routes"></tbody></table>
<h2>Upstreams</h2>
<table><thead><tr><th>Upstream</th><th>Circuit</th><th>Forced</th><th>Failure rate</th>
<th>p50 / p99</th><th>Last failure</th><th>Health check</th><th>Cooldown</th>
<th>In flight</th><th>Drill</th></tr></thead>
<tbody id="upstreams"></tbody></table>
<h2>Cache</h2>
<p id="cache" class="note">no data yet</p>
<h2>Recommendations</h2>
<ul id="recommendations"></ul>
<h2>Recent events</h2>
<ul id="events"></ul>
<script>
"use strict";
const KEY = "failover-proxy-admin-token";
const PERIOD_MS = 2000;
const COLOUR = {
  healthy: "ok", degraded: "warn", critical: "bad",
  closed: "ok", half_open: "warn", open: "bad", up: "ok", down: "bad", off: "mute",
};
let timer = null;
let run = 0;

// A node whose children are given as nodes or as text: data never becomes markup.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  for (const child of children) {
    node.append(child instanceof Node ? child : String(child ?? "\u2014"));
  }
  return node;
}
const badge = (state) => el("span", {class: "badge " + (COLOUR[state] || "mute")}, state);
const pct = (x) => (x == null ? "\u2014" : (x * 100).toFixed(x >= 0.1 || x === 0 ? 0 : 1) + "%");
const ms = (x) => (x == null ? "\u2014" : x + " ms");
// Sizes for people, in the units the config is written in: 714 B, 1.5 KiB, 64 MiB.
function size(bytes) {
  if (bytes == null) return "\u2014";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1023.95 && unit < units.length - 1) {  // never "1024 KiB"
    value /= 1024;
    unit += 1;
  }
  const shown = unit === 0 ? String(value) : String(Math.round(value * 10) / 10);
  return shown + " " + units[unit];
}
// "1 entry", "2 entries": a count with its noun in the right number.
const count = (n, one, many) => n + " " + (n === 1 ? one : many);
const $ = (id) => document.getElementById(id);

function tokenFromFragment() {
  for (const part of location.hash.slice(1).split("&")) {
    if (part.startsWith("token=")) {
      sessionStorage.setItem(KEY, decodeURIComponent(part.slice(6)));
      history.replaceState(null, "", location.pathname + location.search);  // out of sight
    }
  }
}

function say(kind, text) {
  const box = $("message");
  box.dataset.kind = kind;
  box.textContent = text;
  box.hidden = !kind;
}

function shares(route) {
  const bar = el("div", {class: "bar"});
  const words = [];
  for (const [source, share] of Object.entries(route.served_last_minute)) {
    const first = source === route.upstreams[0];
    const layer = first ? "ok" : route.upstreams.includes(source) ? "warn"
      : source === "cache" ? "cache" : "bad";
    const part = el("span", {class: layer, title: source + " " + pct(share)});
    part.style.width = share * 100 + "%";
    bar.append(part);
    words.push(source + " " + pct(share));
  }
  return words.length ? el("div", {}, bar, words.join(", ")) : el("span", {class: "note"}, "idle");
}

function routeRow(name, r) {
  return el("tr", {"data-route": name, "data-state": r.health},
    el("td", {}, name), el("td", {}, badge(r.health)),
    el("td", {}, r.upstreams.join(" \u2192 ")), el("td", {}, shares(r)),
    el("td", {}, r.requests_last_minute));
}

function upstreamRow(name, u) {
  const c = u.circuit;
  const circuit = el("td", {}, badge(c.state));
  if (c.retry_in_s != null) circuit.append(" retry in " + c.retry_in_s + "s");
  if (c.enabled === false) circuit.append(" (no breaker)");
  const rate = u.failure_rate_last_minute;
  const last = u.last_failure;
  const check = u.health_check;
  return el("tr", {"data-upstream": name, "data-state": c.state, "data-forced": c.forced},
    el("td", {}, name), circuit, el("td", {}, c.forced ? "forced" : "automatic"),
    el("td", {}, rate == null ? "\u2014" : pct(rate) + " of " + u.calls_last_minute),
    el("td", {}, ms(u.latency_ms.p50) + " / " + ms(u.latency_ms.p99)),
    el("td", {}, last ? last.class + " (" + last.ago_s + "s ago)" : "none"),
    el("td", {title: check.detail || ""}, badge(check.state)),
    el("td", {}, u.cooldown_s > 0 ? u.cooldown_s + "s" : "\u2014"),
    el("td", {}, u.in_flight),
    el("td", {}, u.drill ? u.drill.what + " (" + u.drill.ends_in_s + "s left)" : "\u2014"));
}

function render(body) {
  const status = $("status");
  status.textContent = body.status;
  status.dataset.state = body.status;
  status.className = "badge " + (COLOUR[body.status] || "mute");
  $("about").textContent = "\u00b7 proxy time " + body.time + " \u00b7 up " + body.uptime_s
    + "s \u00b7 config " + (body.config.file || "(inline)") + " loaded " + body.config.loaded_at;
  $("routes").replaceChildren(...Object.entries(body.routes).map(([n, r]) => routeRow(n, r)));
  $("upstreams").replaceChildren(
    ...Object.entries(body.upstreams).map(([n, u]) => upstreamRow(n, u)));
  const c = body.cache;
  $("cache").textContent = count(c.entries, "entry", "entries") + ", " + size(c.bytes)
    + " of " + size(c.max_bytes) + "; hits " + c.hits + ", stale serves " + c.stale_serves
    + ", misses " + c.misses
    + ", collapsed " + c.collapsed + ", evictions " + c.evictions + "; oldest "
    + (c.oldest_age_s == null ? "\u2014" : c.oldest_age_s + "s")
    + (c.file ? "; kept in " + c.file : "");
  const advice = body.recommendations.length ? body.recommendations : ["nothing to do"];
  $("recommendations").replaceChildren(...advice.map((text) => el("li", {}, text)));
  const events = body.recent_events.map((e) => el("li", {"data-kind": e.kind},
    e.at + " " + (e.upstream || "") + " " + e.kind + ": " + e.detail));
  $("events").replaceChildren(...(events.length ? events : [el("li", {}, "none")]));
  $("updated").textContent = new Date().toLocaleTimeString();
}

async function refresh() {
  clearTimeout(timer);
  const mine = ++run;
  const token = sessionStorage.getItem(KEY);
  if (!token) {
    say("no-token", "Enter the admin token to read /health.");
    return;
  }
  try {
    const answer = await fetch("/health", {
      headers: {Authorization: "Bearer " + token}, cache: "no-store",
    });
    if (mine !== run) return;
    if (answer.status === 401) {
      say("unauthorized", "401: the admin token was refused. Enter the right one below.");
      return;  // no retry with a token known to be wrong
    }
    if (!answer.ok) throw new Error("/health answered " + answer.status);
    render(await answer.json());
    say("", "");
  } catch (error) {
    if (mine !== run) return;
    say("error", "Cannot read /health (" + error.message + "); trying again every 2 s. "
      + "Last updated: " + $("updated").textContent + ".");
  }
  timer = setTimeout(refresh, PERIOD_MS);
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("token").value.trim());
  $("token").value = "";
  refresh();
});
tokenFromFragment();
refresh();
</script>
</body>
</html>
"""
