// Calls to the server: the key goes in an Authorization header, never in a URL or a cookie.
// It is kept in this module's memory, and in sessionStorage only when the operator asks (it then
// lives as long as this tab and is never shared with other tabs or written to disk by the page).

const KEY_SLOT = "llmasos.console.key";
let apiKey = sessionStorage.getItem(KEY_SLOT);

export function currentKey() {
  return apiKey;
}

export function signIn(key, remember) {
  apiKey = key;
  if (remember) sessionStorage.setItem(KEY_SLOT, key);
  else sessionStorage.removeItem(KEY_SLOT);
}

export function signOut() {
  apiKey = null;
  sessionStorage.removeItem(KEY_SLOT);
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(key, body) {
  const out = { Authorization: `Bearer ${key || apiKey}` };
  if (body !== undefined) out["Content-Type"] = "application/json";
  return out;
}

// A call to the API; its JSON answer, or an ApiError with the server's message.
export async function call(method, path, body, { key, signal } = {}) {
  const response = await fetch(path, {
    method,
    headers: headers(key, body),
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
    signal,
  });
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

// The raw response of a call (for pictures and streams); an ApiError when it failed.
export async function fetchRaw(method, path, body, { key, signal } = {}) {
  const response = await fetch(path, {
    method,
    headers: headers(key, body),
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
    signal,
  });
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
  return response;
}

async function errorMessage(response) {
  try {
    const data = await response.json();
    return (data.error && data.error.message) || JSON.stringify(data);
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

// Server-sent events read from a fetch (EventSource cannot send an Authorization header):
// calls onEvent(name, data) for each event until the stream ends or `signal` aborts it.
export async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, data.join("\n"));
    }
  }
}
