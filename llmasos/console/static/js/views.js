// The views fed by the overview stream: processes, apps, models, latency, audit, nodes.
import { bytes, clock, column, el, fillTable, millis, percent, seconds, setText } from "./dom.js";

const $ = (id) => document.getElementById(id);
export const PRIORITIES = ["realtime", "interactive", "normal", "batch"];

export function renderProcesses(overview, actions) {
  const processes = overview.processes;
  const count = (state) => processes.filter((p) => p.state === state).length;
  setText(
    $("process-summary"),
    `${count("running")} running, ${count("queued")} queued, ${count("suspended")} suspended; ` +
      `${processes.length} shown (live, then the latest ended)`,
  );
  const live = (p) => ["queued", "running", "suspended", "blocked"].includes(p.state);
  fillTable(
    $("processes-table"),
    [
      column("pid", "pid", undefined, { numeric: true }),
      column("app", "app"),
      column("model", "model"),
      column("node", "node"),
      column("state", "state"),
      column("reason", "reason"),
      column("priority", "priority"),
      column("tokens in", "tokens_in", undefined, { numeric: true }),
      column("tokens out", "tokens_out", undefined, { numeric: true }),
      column("waited s", "waited_seconds", seconds, { numeric: true }),
      column("running s", "running_seconds", seconds, { numeric: true }),
      column("preempted", "preemptions", undefined, { numeric: true }),
    ],
    processes,
    {
      key: (p) => p.pid,
      rowClass: (p) => (live(p) ? p.state : "ended"),
      extra: (p) => (live(p) ? el("button", { type: "button", class: "danger", onclick: () => actions.cancel(p.pid) }, "Cancel") : ""),
      extraKey: live,
    },
  );
}

export function renderApps(overview, actions) {
  const admin = overview.caller.admin;
  fillTable(
    $("apps-table"),
    [
      column("app", "name"),
      column("priority", "priority", (v, a) => (admin ? prioritySelect(a) : v)),
      column("weight", "weight", (v, a) => (admin ? el("input", { type: "number", class: "weight", value: v, min: "0.01", max: "1000", step: "0.1", "aria-label": `weight of ${a.name}` }) : v)),
      column("tokens last min / quota", "tokens_last_minute", (v, a) => `${v} / ${a.tokens_per_minute || "∞"}`),
      column("running / max", "running", (v, a) => `${v} / ${a.max_concurrent || "∞"}`),
      column("queued / max", "queued", (v, a) => `${v} / ${a.max_queued || "∞"}`),
      column("storage / quota", "storage_bytes", (v, a) => `${bytes(v)} / ${a.storage_max_bytes ? bytes(a.storage_max_bytes) : "∞"}`),
      column("tokens computed", "tokens_computed", undefined, { numeric: true }),
      column("keys", "keys", (v) => v.join(", ") || "none"),
    ],
    overview.apps,
    {
      key: (a) => a.name,
      extra: (a) =>
        admin
          ? [
              el("button", { type: "button", class: "save", onclick: (e) => actions.saveApp(a.name, e.target.closest("tr")) }, "Save"),
              el("button", { type: "button", class: "new-key", onclick: () => actions.newKey(a.name) }, "New key"),
              a.admin ? "" : el("button", { type: "button", class: "danger revoke", onclick: () => actions.revokeKeys(a.name) }, "Revoke keys"),
            ]
          : "",
      extraKey: (a) => [admin, a.admin],
    },
  );
  $("app-create").hidden = !admin;
}

function prioritySelect(app) {
  return el("select", { class: "priority", "aria-label": `priority of ${app.name}` }, PRIORITIES.map((p) => el("option", { value: p, selected: p === app.priority }, p)));
}

export function renderModels(overview, actions) {
  const m = overview.models;
  const admin = overview.caller.admin;
  setText($("memory-summary"), `memory: ${bytes(m.memory_used_bytes)} used of a ${bytes(m.memory_budget_bytes)} budget`);
  $("memory-bar").style.width = `${Math.min(100, (100 * m.memory_used_bytes) / Math.max(1, m.memory_budget_bytes))}%`;
  const kv = (f) => (v, model) => (model.kv ? f(model.kv) : "–");
  fillTable(
    $("models-table"),
    [
      column("model", "name"),
      column("node", "node"),
      column("resident", "resident", (v) => (v ? "yes" : "no")),
      column("memory", "memory_bytes", bytes, { numeric: true }),
      column("processes", "active_processes", undefined, { numeric: true }),
      column("KV blocks used / total", "kv_blocks", kv((k) => `${k.blocks_used} / ${k.blocks_total}`)),
      column("prefix-cache hit rate", "hit_rate", kv((k) => percent(k.prefix_cache_hit_rate))),
      column("unloads in s", "expires_in_seconds", (v, model) => (model.held ? "held" : v === null ? "–" : Math.round(v))),
    ],
    m.models,
    {
      key: (model) => model.name,
      extra: (model) =>
        admin
          ? model.resident
            ? el("button", { type: "button", class: "unload", onclick: () => actions.unload(model.name) }, "Unload")
            : el("button", { type: "button", class: "load", onclick: () => actions.load(model.name) }, "Load")
          : "",
      extraKey: (model) => [admin, model.resident],
    },
  );
  const kvRows = [];
  for (const model of m.models) {
    for (const [app, blocks] of Object.entries((model.kv && model.kv.blocks_by_app_estimated) || {})) {
      kvRows.push({ model: model.name, app, blocks, tokens: blocks * model.kv.block_size });
    }
  }
  fillTable(
    $("kv-table"),
    [column("model", "model"), column("app", "app"), column("KV blocks", "blocks", undefined, { numeric: true }), column("tokens", "tokens", undefined, { numeric: true })],
    kvRows,
    { key: (r) => `${r.model}/${r.app}` },
  );
}

export function renderLatency(overview, charts) {
  fillTable(
    $("latency-table"),
    [
      column("model", "model"),
      column("app", "app"),
      column("requests", "ttft_count", undefined, { numeric: true }),
      column("TTFT p50 ms", "ttft_p50", millis, { numeric: true }),
      column("TTFT p95 ms", "ttft_p95", millis, { numeric: true }),
      column("TPOT p50 ms", "tpot_p50", millis, { numeric: true }),
      column("TPOT p95 ms", "tpot_p95", millis, { numeric: true }),
    ],
    overview.latency,
    { key: (s) => `${s.model}/${s.app}` },
  );
  charts.update(overview.latency);
}

export function renderAudit(overview) {
  const text = $("audit-filter").value.trim().toLowerCase();
  const deniedOnly = $("audit-denied").checked;
  const rows = overview.audit.filter(
    (r) =>
      (!deniedOnly || !r.allowed) &&
      (!text || [r.app, r.call, r.target, r.reason, r.outcome].some((v) => String(v || "").toLowerCase().includes(text))),
  );
  fillTable(
    $("audit-table"),
    [
      column("#", "id", undefined, { numeric: true }),
      column("time", "ts", clock),
      column("app", "app"),
      column("call", "call"),
      column("target", "target"),
      column("outcome", "outcome"),
      column("reason", "reason"),
      column("pid", "pid", undefined, { numeric: true }),
      column("tokens in/out", "tokens_in", (v, r) => `${v}/${r.tokens_out}`),
    ],
    rows,
    { key: (r) => r.id, rowClass: (r) => (r.allowed ? "allowed" : "denied") },
  );
}

export function renderDataUsage(overview) {
  fillTable(
    $("data-usage-table"),
    [
      column("app", "name"),
      column("bytes", "storage_bytes", bytes, { numeric: true }),
      column("quota", "storage_max_bytes", bytes, { numeric: true }),
      column("items", "storage_items", undefined, { numeric: true }),
    ],
    [...overview.apps].sort((a, b) => b.storage_bytes - a.storage_bytes),
    { key: (a) => a.name },
  );
  const apps = overview.apps.map((a) => a.name);
  const picker = $("data-app");
  if (picker.dataset.apps !== apps.join(",") && document.activeElement !== picker) {
    const chosen = picker.value || overview.caller.app;
    picker.replaceChildren(...apps.map((name) => el("option", { value: name, selected: name === chosen }, name)));
    picker.dataset.apps = apps.join(",");
  }
}

// An app's documents, vector stores and conversations by size: read when the view opens (or its
// app is chosen), an audited call, never on a timer.
export function renderInventory(inventory) {
  $("inventory-app").textContent = inventory.app;
  fillTable(
    $("files-table"),
    [column("document", "filename"), column("id", "id"), column("purpose", "purpose"), column("bytes", "bytes", bytes, { numeric: true }), column("created", "created_at", clock)],
    inventory.documents,
    { key: (f) => f.id, empty: "no documents" },
  );
  fillTable(
    $("stores-table"),
    [column("store", "name"), column("id", "id"), column("files", "files", undefined, { numeric: true }), column("bytes", "bytes", bytes, { numeric: true }), column("created", "created_at", clock)],
    inventory.vector_stores,
    { key: (s) => s.id, empty: "no vector stores" },
  );
  fillTable(
    $("conversations-table"),
    [column("conversation", "id"), column("items", "items", undefined, { numeric: true }), column("bytes", "bytes", bytes, { numeric: true }), column("of responses", "is_thread", (v) => (v ? "yes" : "no")), column("created", "created_at", clock)],
    inventory.conversations,
    { key: (c) => c.id, empty: "no conversations" },
  );
}

export function renderNodes(overview) {
  $("nodes-empty").hidden = overview.nodes.length > 0;
  const models = (v) =>
    Object.entries(v || {})
      .map(([name, m]) => (m.healthy ? name : `${name} (unhealthy)`))
      .join(", ");
  fillTable(
    $("nodes-table"),
    [
      column("node", "name"),
      column("alive", "alive", (v) => (v ? "yes" : "no")),
      column("health", "healthy", (v, n) => (v ? "healthy" : `unhealthy: ${n.reason}`)),
      column("capabilities", "capabilities", (v) => (v || []).join(", ")),
      column("models", "models", models),
      column("processes", "processes", undefined, { numeric: true }),
      column("joined", "joined_at", clock),
    ],
    overview.nodes,
    { key: (n) => n.name, rowClass: (n) => (!n.alive ? "dead" : n.healthy ? "" : "unhealthy"), empty: "no nodes" },
  );
}
