// Building the page from data: text always goes in as textContent, never as HTML.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// A column of a table: its heading, the row's field it shows, how to show it.
export function column(heading, field, format = (v) => v, { numeric = false } = {}) {
  return { heading, field, format, numeric };
}

// Fill `table` with one row per item; `key(item)` names the row (data-key), `extra(item)` adds
// cells (actions) at the end, `rowClass(item)` marks rows. A table the operator is typing in is
// left as it is until they leave it, so a refresh never eats what they typed.
export function fillTable(table, columns, items, { key, extra, rowClass, extraHeading } = {}) {
  if (table.contains(document.activeElement) && document.activeElement !== document.body) return;
  const head = el("tr", {}, columns.map((c) => el("th", {}, c.heading)), extra ? el("th", {}, extraHeading || "") : null);
  const rows = items.map((item) =>
    el(
      "tr",
      { dataset: key ? { key: String(key(item)) } : {}, class: rowClass ? rowClass(item) : undefined },
      columns.map((c) =>
        el("td", { dataset: { field: c.field }, class: c.numeric ? "num" : undefined }, show(c.format(item[c.field], item))),
      ),
      extra ? el("td", { class: "actions" }, extra(item)) : null,
    ),
  );
  table.replaceChildren(el("thead", {}, head), el("tbody", {}, rows));
}

function show(value) {
  if (value === null || value === undefined) return "–";
  if (value instanceof Node) return value;
  return String(value);
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function seconds(s) {
  return s === null || s === undefined ? "–" : Number(s).toFixed(3);
}

export function percent(x) {
  return x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`;
}

export function clock(ts) {
  return ts ? new Date(ts * 1000).toLocaleTimeString() : "–";
}
