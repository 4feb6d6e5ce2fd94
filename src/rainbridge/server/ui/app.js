// rainbridge dashboard: reads the management API with the admin token every 2 seconds.
// Every value from the server is put into the page with textContent (never as HTML).
"use strict";

const TOKEN_KEY = "rainbridge.admin_token";
const REFRESH_MS = 2000;
const MAX_KEYS = 50; // virtual keys whose usage is read per refresh
const STATE_LABEL = { alive: "alive", suspect: "suspect", dead: "failed", left: "left" };

const $ = (id) => document.getElementById(id);
let timer = null;
let previous = new Map(); // member name -> {t, traffic}: rates come from two reads

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child == null ? "" : String(child)));
  }
  return node;
}

class Unauthorized extends Error {}

async function api(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const response = await fetch(path, { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
  if (response.status === 401 || response.status === 403) throw new Unauthorized("the admin token was refused");
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

// ------------------------------------------------------------------ sign-in

function showSignIn(message) {
  clearTimeout(timer);
  sessionStorage.removeItem(TOKEN_KEY);
  $("dashboard").hidden = true;
  $("signout").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  $("token").focus();
}

function showDashboard() {
  $("signin").hidden = true;
  $("dashboard").hidden = false;
  $("signout").hidden = false;
  refresh();
}

// ------------------------------------------------------------------ cluster

function rates(name, traffic, now) {
  if (!traffic) return { rps: null, errors: null, latency: null };
  const before = previous.get(name);
  previous.set(name, { t: now, traffic });
  if (!before || before.traffic.requests > traffic.requests) return { rps: null, errors: null, latency: null };
  const seconds = (now - before.t) / 1000;
  const requests = traffic.requests - before.traffic.requests;
  return {
    rps: seconds > 0 ? requests / seconds : null,
    errors: requests > 0 ? (100 * (traffic.errors - before.traffic.errors)) / requests : null,
    latency: requests > 0 ? (traffic.latency_ms_total - before.traffic.latency_ms_total) / requests : null,
  };
}

const fixed = (v, digits) => (v == null ? "–" : v.toFixed(digits));

function lastChange(member) {
  if (member.seconds_since_change == null) return "–";
  const s = Math.round(member.seconds_since_change);
  return s < 120 ? s + " s ago" : Math.round(s / 60) + " min ago";
}

function memberRow(member, now) {
  const traffic = member.counters ? member.counters.traffic : member.traffic;
  const r = rates(member.name, traffic, now);
  const state = STATE_LABEL[member.state] || member.state;
  return el("tr", { "data-member": member.name, "data-state": state },
    el("td", {}, member.name + (member.self ? " (this node)" : "")),
    el("td", { class: "state-" + state }, state),
    el("td", {}, member.readiness || "–"),
    el("td", {}, member.incarnation == null ? "–" : member.incarnation),
    el("td", {}, lastChange(member)),
    el("td", {}, fixed(r.rps, 1)),
    el("td", {}, fixed(r.errors, 1)),
    el("td", {}, fixed(r.latency, 1)),
    el("td", {}, member.http || member.address || ""));
}

function renderCluster(status, stats) {
  const now = Date.now();
  const box = $("regions");
  let members;
  if (status.enabled) {
    members = status.members;
    const h = status.health || {};
    $("cluster-summary").textContent =
      `${h.members} members: ${h.alive || 0} alive, ${h.suspect || 0} suspect, ${h.dead || 0} failed, ${h.left || 0} left; health ${h.status}`;
    $("node").textContent = status.node.name + (status.node.region ? " · " + status.node.region : "");
  } else {
    members = [{ name: stats.node_id, self: true, state: "alive", readiness: "ready", region: stats.region,
                 traffic: stats.traffic }];
    $("cluster-summary").textContent = "cluster mode is off: this node alone";
    $("node").textContent = stats.node_id;
  }
  const byRegion = new Map();
  for (const m of members) {
    const region = m.region || "";
    if (!byRegion.has(region)) byRegion.set(region, []);
    byRegion.get(region).push(m);
  }
  const parts = [];
  for (const region of [...byRegion.keys()].sort()) {
    const rows = byRegion.get(region).sort((a, b) => a.name.localeCompare(b.name)).map((m) => memberRow(m, now));
    parts.push(el("h3", {}, region ? "Region " + region : "No region"));
    parts.push(el("table", { "data-region": region },
      el("thead", {}, el("tr", {}, ...["member", "state", "readiness", "incarnation", "last change",
        "req/s", "errors %", "avg latency ms", "address"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows)));
  }
  box.replaceChildren(...parts);
}

// ------------------------------------------------------------------ virtual keys

function bar(label, used, max, unit, testid) {
  const pct = max > 0 ? Math.min(100, (100 * used) / max) : 0;
  const fill = el("div", { class: "fill" + (pct >= 100 ? " full" : pct >= 80 ? " high" : "") });
  fill.style.width = pct.toFixed(1) + "%"; // CSSOM: allowed under style-src 'self'
  const shown = unit === "$" ? "$" + used.toFixed(4) + " of $" + max : used + " of " + max + " " + unit;
  return el("div", { class: "limit", "data-limit": testid, "data-used": String(used), "data-max": String(max) },
    el("span", {}, label), el("div", { class: "bar" }, fill), el("span", { class: "muted" }, shown));
}

function keyCard(vk, usage) {
  const card = el("div", { class: "key", "data-vk": vk.id },
    el("span", { class: "name" }, vk.name || vk.id), " ",
    el("span", { class: "muted" }, vk.id + (vk.is_active === false ? " · inactive" : "")));
  const level = usage && usage.levels ? usage.levels.find((l) => l.level === "virtual key") : null;
  const limits = [];
  if (level) {
    for (const b of level.budgets || []) {
      limits.push(bar("budget " + b.reset_duration, b.current_usage, b.max_limit, "$", "budget:" + b.id));
    }
    const rl = level.rate_limit || {};
    for (const [metric, l] of Object.entries(rl)) {
      if (l && l.max_limit != null) {
        limits.push(bar(metric + "s per " + l.reset_duration, l.current_usage, l.max_limit, metric + "s", metric));
      }
    }
  }
  if (!limits.length) limits.push(el("div", { class: "muted" }, "no budget or rate limit"));
  card.append(...limits);
  return card;
}

async function renderKeys(list) {
  const keys = (list.virtual_keys || []).slice(0, MAX_KEYS);
  const usages = await Promise.all(keys.map((vk) =>
    api("/api/governance/virtual-keys/" + encodeURIComponent(vk.id) + "/usage").catch((e) => {
      if (e instanceof Unauthorized) throw e;
      return null;
    })));
  const cards = keys.map((vk, i) => keyCard(vk, usages[i]));
  if (!cards.length) cards.push(el("p", { class: "muted" }, "no virtual keys"));
  $("keys").replaceChildren(...cards);
}

// ------------------------------------------------------------------ logs

function logQuery() {
  const params = new URLSearchParams({ limit: "50" });
  const add = (name, id) => {
    const v = $(id).value.trim();
    if (v) params.set(name, v);
  };
  add("provider", "f-provider");
  add("model", "f-model");
  add("virtual_key_id", "f-key");
  add("status", "f-status");
  return "/api/logs?" + params.toString();
}

function renderLogs(body) {
  const rows = (body.logs || []).map((l) => el("tr", { "data-log": l.id },
    el("td", {}, new Date(l.ts).toLocaleTimeString()),
    el("td", {}, l.provider || "–"),
    el("td", {}, l.model || "–"),
    el("td", {}, l.virtual_key_id || "–"),
    el("td", {}, l.status),
    el("td", {}, l.latency_ms == null ? "–" : Math.round(l.latency_ms)),
    el("td", {}, (l.prompt_tokens ?? "–") + " / " + (l.completion_tokens ?? "–")),
    el("td", {}, l.cost == null ? "–" : Number(l.cost).toFixed(6)),
    el("td", {}, l.error_type || "")));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "9", class: "muted" }, "no requests logged (yet)")));
  $("logs").tBodies[0].replaceChildren(...rows);
}

// ------------------------------------------------------------------ refresh loop

async function refresh() {
  clearTimeout(timer);
  try {
    const [status, stats, keys, logs] = await Promise.all([
      api("/api/cluster/status"), api("/api/stats"), api("/api/governance/virtual-keys"),
      api(logQuery()).catch((e) => {
        if (e instanceof Unauthorized) throw e;
        return { logs: [] }; // no logs store: the rest of the page still works
      }),
    ]);
    renderCluster(status, stats);
    await renderKeys(keys);
    renderLogs(logs);
    $("error").textContent = "";
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    if (e instanceof Unauthorized) {
      showSignIn("The admin token was refused.");
      return;
    }
    $("error").textContent = "Could not refresh: " + e.message;
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    $("token").value = "";
    previous = new Map();
    showDashboard();
  });
  $("signout").addEventListener("click", () => showSignIn(""));
  $("log-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    refresh();
  });
  if (sessionStorage.getItem(TOKEN_KEY)) showDashboard();
  else showSignIn("");
});
