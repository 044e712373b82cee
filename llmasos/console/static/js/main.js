// The console: sign in, follow the overview stream, switch views, and act through the /os calls
// (each of which the server checks and audits).
import { ApiError, call, currentKey, fetchRaw, readEvents, signIn, signOut } from "./api.js";
import { LatencyCharts } from "./charts.js";
import { clock, column, el, fillTable } from "./dom.js";
import {
  PRIORITIES,
  renderApps,
  renderAudit,
  renderDataUsage,
  renderLatency,
  renderModels,
  renderNodes,
  renderInventory,
  renderProcesses,
} from "./views.js";
import { Playground } from "./playground.js";

const $ = (id) => document.getElementById(id);
// What each view shows of the overview: the stream is asked for these sections only, so the server
// builds nothing a hidden view would show (and the page draws nothing it would not). One file says
// it for the page, the server's tests and the benchmarks (llmasos/console/routes.py VIEW_SECTIONS).
const VIEW_SECTIONS = await fetch(new URL("./view_sections.json", import.meta.url)).then((r) => r.json());
const state = { overview: null, view: "processes", stream: null, charts: null, playground: null };

// ---- signing in and out ------------------------------------------------------------------------

async function start(key, remember) {
  signIn(key, remember);
  try {
    const overview = await call("GET", "/os/console/overview");
    $("signin-error").textContent = "";
    $("signin").hidden = true;
    $("console").hidden = false;
    $("who").textContent = `${overview.caller.app}${overview.caller.admin ? " (admin)" : ""}`;
    state.charts = state.charts || new LatencyCharts($("chart-ttft"), $("chart-tpot"));
    state.playground = state.playground || new Playground(notify);
    state.overview = overview;
    draw(new Set(Object.keys(overview)));
    follow();
  } catch (err) {
    signOut();
    $("signin-error").textContent = err instanceof ApiError ? err.message : `cannot reach the server: ${err}`;
  }
}

function stop() {
  if (state.stream) state.stream.abort();
  state.stream = null;
  signOut();
  state.overview = null;
  $("console").hidden = true;
  $("signin").hidden = false;
  $("signin-key").value = "";
}

// ---- the live stream ---------------------------------------------------------------------------

// Follow the stream of the visible view's sections until it is aborted (sign-out, or another view
// shown, which follows its own); each event carries only the sections that changed.
// The first stream of a sign-in is audited (`overview.watch`); those reopened for another view, or
// after a lost connection, say they continue it.
async function follow(continued = false) {
  if (state.stream) state.stream.abort();
  const controller = new AbortController();
  const view = state.view;
  state.stream = controller;
  while (!controller.signal.aborted) {
    try {
      const views = VIEW_SECTIONS[view].join(",");
      const path = `/os/console/stream?interval=1&views=${views}${continued ? "&continued=true" : ""}`;
      continued = true;
      const response = await fetchRaw("GET", path, undefined, { signal: controller.signal });
      setLive("live");
      await readEvents(response, (name, data) => {
        if (name !== "overview" || controller.signal.aborted) return;
        const changed = JSON.parse(data);
        Object.assign(state.overview, changed);
        drawAtNextFrame(Object.keys(changed), view);
      });
    } catch (err) {
      if (controller.signal.aborted) return;
      if (err instanceof ApiError && err.status === 401) return stop();
    }
    setLive("down");
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

function setLive(how) {
  if ($("live-status").dataset.how === how) return;
  $("live-status").dataset.how = how;
  $("live-status").textContent = how === "live" ? "live" : "reconnecting";
  $("live-status").className = `badge ${how}`;
}

// Draw what the stream changed at the next frame, merging events that come before it: a tab in the
// background gets no frames, so a console left open behind other tabs keeps the sections it is sent
// and does no DOM work until it is shown (then it draws them all at once).
let pendingDraw = null;
function drawAtNextFrame(sections, view) {
  if (pendingDraw) {
    for (const section of sections) pendingDraw.add(section);
    return;
  }
  pendingDraw = new Set(sections);
  requestAnimationFrame(() => {
    const changed = pendingDraw;
    pendingDraw = null;
    if (!state.overview) return; // signed out meanwhile
    draw(changed);
    if (view === state.view) document.body.dataset.following = view;
  });
}

// Draw the visible view if a section it shows is among `changed` (all of its sections when it has
// just been shown); hidden views are drawn when they are shown, from the sections kept meanwhile.
function draw(changed) {
  const overview = state.overview;
  $("updated").textContent = new Date().toLocaleTimeString();
  const view = state.view;
  if (VIEW_SECTIONS[view].some((section) => changed.has(section) && section in overview)) {
    const render = RENDERERS[view];
    if (render) render(overview);
    $(`view-${view}`).dataset.drawn = String(Number($(`view-${view}`).dataset.drawn || 0) + 1);
  }
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
}

const RENDERERS = {
  processes: (o) => renderProcesses(o, actions),
  apps: (o) => renderApps(o, actions),
  models: (o) => renderModels(o, actions),
  latency: (o) => renderLatency(o, state.charts),
  audit: (o) => renderAudit(o),
  data: (o) => renderDataUsage(o),
  nodes: (o) => renderNodes(o),
  playground: (o) => state.playground.offer(o),
};

// ---- actions -----------------------------------------------------------------------------------

function notify(message, failed = false) {
  $("action-status").textContent = message;
  $("action-status").className = failed ? "status error" : "status";
}

async function act(what, fn) {
  try {
    const result = await fn();
    notify(what);
    if (document.activeElement) document.activeElement.blur();
    return result;
  } catch (err) {
    notify(`${what} failed: ${err.message}`, true);
    return null;
  }
}

const actions = {
  cancel: (pid) => act(`process ${pid} cancelled`, () => call("DELETE", `/os/tasks/${pid}`)),
  load: (name) => act(`model ${name} loaded`, () => call("POST", `/os/models/${encodeURIComponent(name)}/load`, {})),
  unload: (name) => act(`model ${name} unloaded`, () => call("POST", `/os/models/${encodeURIComponent(name)}/unload`)),
  saveApp: (name, row) =>
    act(`app ${name} saved`, () =>
      call("PATCH", `/os/apps/${encodeURIComponent(name)}`, {
        priority: row.querySelector("select.priority").value,
        weight: Number(row.querySelector("input.weight").value),
      }),
    ),
  newKey: async (name) => {
    const made = await act(`a new key for ${name}`, () => call("POST", `/os/apps/${encodeURIComponent(name)}/keys`));
    if (made) showKeyOnce(name, made.api_key);
  },
  revokeKeys: (name) => act(`keys of ${name} revoked`, () => call("DELETE", `/os/apps/${encodeURIComponent(name)}/keys`)),
};

function showKeyOnce(app, key) {
  $("key-once-app").textContent = app;
  $("key-once-value").textContent = key;
  $("key-once").hidden = false;
}

async function createApp() {
  const name = $("app-create-name").value.trim();
  const made = await act(`app ${name} created`, () => call("POST", "/os/apps", { name, priority: $("app-create-priority").value }));
  if (made) {
    $("app-create-name").value = "";
    showKeyOnce(name, made.api_key);
  }
}

// ---- views read when opened (each read is an audited call, so never on a timer) ------------------

async function refreshInventory() {
  const app = $("data-app").value || (state.overview && state.overview.caller.app);
  if (!app) return;
  try {
    renderInventory(await call("GET", `/os/apps/${encodeURIComponent(app)}/data/inventory`));
  } catch (err) {
    notify(`the data of ${app}: ${err.message}`, true);
  }
}

async function refreshRuns() {
  const runs = (await call("GET", "/os/workflows/runs?limit=50").catch(() => ({ runs: [] }))).runs;
  fillTable(
    $("runs-table"),
    [column("run", "id"), column("workflow", "workflow"), column("app", "app"), column("status", "status"), column("created", "created_at", clock)],
    runs,
    {
      key: (r) => r.id,
      extra: (r) => [
        el("button", { type: "button", class: "show-run", onclick: () => showRun(r.id) }, "Show"),
        r.status === "waiting" ? el("button", { type: "button", class: "approve", onclick: () => approveRun(r) }, "Approve") : "",
        ["running", "waiting", "pending"].includes(r.status)
          ? el("button", { type: "button", class: "danger cancel-run", onclick: () => act(`run ${r.id} cancelled`, () => call("DELETE", `/os/workflows/runs/${r.id}`)).then(refreshRuns) }, "Cancel")
          : "",
      ],
    },
  );
}

async function approveRun(run) {
  const detail = await call("GET", `/os/workflows/runs/${run.id}`);
  const waiting = (detail.steps || []).find((s) => s.status === "waiting");
  if (!waiting) return notify(`run ${run.id} waits for no step`, true);
  await act(`step ${waiting.step} of run ${run.id} approved`, () =>
    call("POST", `/os/workflows/runs/${run.id}/approve`, { step: waiting.step }),
  );
  refreshRuns();
}

async function showRun(id) {
  const detail = await call("GET", `/os/workflows/runs/${id}`);
  $("run-detail").hidden = false;
  $("run-detail-id").textContent = id;
  try {
    const picture = await fetchRaw("GET", `/os/workflows/runs/${id}/graph?format=svg`);
    $("run-graph").src = URL.createObjectURL(await picture.blob());
    $("run-graph").hidden = false;
    $("run-graph-text").hidden = true;
  } catch {
    $("run-graph").hidden = true;
    $("run-graph-text").hidden = false;
    $("run-graph-text").textContent = await call("GET", `/os/workflows/runs/${id}/graph?format=dot`).catch((e) => e.message);
  }
  fillTable(
    $("run-steps"),
    [
      column("step", "step"),
      column("kind", "kind"),
      column("needs", "needs", (v) => (v || []).join(", ")),
      column("status", "status"),
      column("started", "started_at", clock),
      column("ended", "finished_at", clock),
      column("seconds", "duration_s"),
      column("error", "error"),
    ],
    detail.steps || [],
    { key: (s) => s.step },
  );
}

// ---- wiring ------------------------------------------------------------------------------------

function switchView(view) {
  if (view === state.view) return;
  state.view = view;
  for (const button of document.querySelectorAll("#tabs button")) button.classList.toggle("active", button.dataset.view === view);
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${view}`;
  delete document.body.dataset.following;
  if (state.overview) {
    draw(new Set(VIEW_SECTIONS[view])); // at once, from what the page holds; then live
    follow(true);
  }
  if (view === "data") refreshInventory();
  if (view === "workflows") refreshRuns();
}

function wire() {
  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    start($("signin-key").value.trim(), $("signin-remember").checked);
  });
  $("signout").addEventListener("click", stop);
  for (const button of document.querySelectorAll("#tabs button")) button.addEventListener("click", () => switchView(button.dataset.view));
  $("app-create-priority").replaceChildren(...PRIORITIES.map((p) => el("option", { value: p, selected: p === "normal" }, p)));
  $("app-create-button").addEventListener("click", createApp);
  $("key-once-dismiss").addEventListener("click", () => {
    $("key-once-value").textContent = "";
    $("key-once").hidden = true;
  });
  for (const id of ["audit-filter", "audit-denied"]) $(id).addEventListener("input", () => state.overview && state.overview.audit && renderAudit(state.overview));
  $("files-refresh").addEventListener("click", refreshInventory);
  $("data-app").addEventListener("change", refreshInventory);
  $("runs-refresh").addEventListener("click", refreshRuns);
  document.body.dataset.ready = "true";
  if (currentKey()) start(currentKey(), true);
}

wire();
