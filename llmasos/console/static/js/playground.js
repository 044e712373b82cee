// The playground: chat as an app (the signed-in key or another app's), with a model (streamed
// through /v1/chat/completions) or a service (/os/services/NAME); the request's process id comes
// back in X-LLMasOS-Pids and its state is followed in the overview.
import { call, fetchRaw, readEvents } from "./api.js";
import { el } from "./dom.js";

const $ = (id) => document.getElementById(id);

export class Playground {
  constructor(notify) {
    this.notify = notify;
    this.pid = null;
    this.controller = null;
    this.offered = "";
    this.services = [];
    $("play-send").addEventListener("click", () => this.send());
    $("play-stop").addEventListener("click", () => this.controller && this.controller.abort());
    call("GET", "/os/services")
      .then((r) => (this.services = r.services.filter((s) => s.kind === "service").map((s) => s.name)))
      .catch(() => {});
  }

  // Offer the models the overview lists (and the services), and show the request's process state.
  offer(overview) {
    const models = overview.models.models.map((m) => m.name);
    const shape = [...models, "|", ...this.services].join(",");
    if (shape !== this.offered && document.activeElement !== $("play-target")) {
      this.offered = shape;
      const chosen = $("play-target").value;
      $("play-target").replaceChildren(
        el("optgroup", { label: "models" }, models.map((m) => el("option", { value: `model:${m}`, selected: `model:${m}` === chosen }, m))),
        el("optgroup", { label: "services" }, this.services.map((s) => el("option", { value: `service:${s}`, selected: `service:${s}` === chosen }, s))),
      );
    }
    const mine = this.pid && overview.processes.find((p) => p.pid === this.pid);
    if (mine && !$("play-output").dataset.done) this.showState(mine);
  }

  showState(process) {
    $("play-state").textContent = `${process.state}: ${process.reason} (${process.tokens_out} tokens out)`;
  }

  async send() {
    const [kind, name] = $("play-target").value.split(/:(.*)/s);
    const key = $("play-key").value.trim() || undefined;
    const prompt = $("play-prompt").value;
    $("play-output").textContent = "";
    delete $("play-output").dataset.done;
    $("play-pid").textContent = "…";
    $("play-state").textContent = "";
    this.controller = new AbortController();
    $("play-send").disabled = true;
    $("play-stop").disabled = false;
    try {
      if (kind === "service") await this.callService(name, prompt, key);
      else await this.chat(name, prompt, key);
    } catch (err) {
      this.notify(this.controller.signal.aborted ? "playground request stopped" : `playground: ${err.message}`, !this.controller.signal.aborted);
    } finally {
      $("play-send").disabled = false;
      $("play-stop").disabled = true;
    }
  }

  async chat(model, prompt, key) {
    const body = { model, messages: [{ role: "user", content: prompt }], max_tokens: Number($("play-max-tokens").value) || 64, stream: true };
    const response = await fetchRaw("POST", "/v1/chat/completions", body, { key, signal: this.controller.signal });
    this.pid = Number((response.headers.get("X-LLMasOS-Pids") || "").split(",")[0]) || null;
    $("play-pid").textContent = this.pid ? String(this.pid) : "unknown";
    await readEvents(response, (name, data) => {
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) $("play-output").append(delta.content);
    });
    // Its final state at once (the overview would show it within a second, in the process view).
    if (this.pid) this.showState(await call("GET", `/os/tasks/${this.pid}`, undefined, { key }));
    $("play-output").dataset.done = "true";
  }

  async callService(service, input, key) {
    this.pid = null;
    $("play-pid").textContent = "(a service call: its processes show in the process view)";
    const result = await call("POST", `/os/services/${encodeURIComponent(service)}`, { input, params: {} }, { key, signal: this.controller.signal });
    $("play-output").textContent = typeof result.output === "string" ? result.output : JSON.stringify(result.output, null, 2);
    $("play-output").dataset.done = "true";
  }
}
