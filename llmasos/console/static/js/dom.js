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
// cells (actions) at the end, rebuilt only when `extraKey(item)` changes (by default, when the item
// does: a process's Cancel button is the same while the process runs, though its counters move
// every second), `rowClass(item)` marks rows, `empty` is what an empty table says.
// Rows are kept between calls and matched by key: a row whose item is as it was is not touched,
// a changed one has only its changed cells rewritten, so a refresh a second costs the browser a
// comparison per row rather than a rebuilt table (and a restyled page). A table the operator is
// typing in is left as it is until they leave it, so a refresh never eats what they typed.
export function fillTable(table, columns, items, { key, extra, extraKey, rowClass, extraHeading, empty = "none" } = {}) {
  if (table.contains(document.activeElement) && document.activeElement !== document.body) return;
  const heading = [...columns.map((c) => c.heading), extra ? extraHeading || "" : null].join("|");
  if (table.dataset.heading !== heading || !table.tBodies.length) {
    const head = el("tr", {}, columns.map((c) => el("th", {}, c.heading)), extra ? el("th", {}, extraHeading || "") : null);
    table.replaceChildren(el("thead", {}, head), el("tbody"));
    table.dataset.heading = heading;
  }
  const body = table.tBodies[0];
  const kept = new Map([...body.rows].filter((r) => r.dataset.key !== undefined).map((r) => [r.dataset.key, r]));
  items.forEach((item, i) => {
    const name = key ? String(key(item)) : String(i);
    const seen = JSON.stringify(item);
    let row = kept.get(name);
    kept.delete(name);
    if (!row) {
      row = el("tr", { dataset: { key: name } });
      for (const c of columns) row.append(el("td", { dataset: { field: c.field }, class: c.numeric ? "num" : undefined }));
      if (extra) row.append(el("td", { class: "actions" }));
    }
    if (row.seen !== seen) {
      row.seen = seen;
      const className = rowClass ? rowClass(item) : "";
      if (row.className !== className) row.className = className;
      columns.forEach((c, j) => setCell(row.cells[j], show(c.format(item[c.field], item))));
      const extraSeen = extra && (extraKey ? JSON.stringify(extraKey(item)) : seen);
      if (extra && row.extraSeen !== extraSeen) {
        row.extraSeen = extraSeen;
        row.cells[columns.length].replaceChildren(...[extra(item)].flat().filter((x) => x !== "" && x != null));
      }
    }
    if (body.rows[i] !== row) body.insertBefore(row, body.rows[i] || null);
  });
  for (const row of kept.values()) row.remove();
  const left = [...body.rows].slice(items.length); // the "empty" line, if any
  if (!items.length && left.length === 1 && left[0].className === "empty" && left[0].textContent === empty) return;
  for (const row of left) row.remove();
  if (!items.length) body.append(el("tr", { class: "empty" }, el("td", { colspan: columns.length + (extra ? 1 : 0) }, empty)));
}

function setCell(cell, value) {
  if (value instanceof Node) cell.replaceChildren(value);
  else if (cell.textContent !== value || cell.firstElementChild) cell.textContent = value;
}

function show(value) {
  if (value === null || value === undefined) return "–";
  if (value instanceof Node) return value;
  return String(value);
}

// Set `node`'s text only when it differs: an unchanged write still costs the page a layout.
export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
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

export function millis(s) {
  return s === null || s === undefined ? "–" : (1000 * Number(s)).toFixed(1);
}

export function percent(x) {
  return x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`;
}

export function clock(ts) {
  return ts ? new Date(ts * 1000).toLocaleTimeString() : "–";
}
