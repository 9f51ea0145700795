// Building the page: elements from data (never from HTML strings, so no
// value the API returns is ever parsed as markup), tables, badges, the
// message banner, and formatting of sizes and times.

/**
 * An element: `h("button", {id: "x", class: "primary", on: {click: f}}, "Go")`.
 * `data` sets data-* attributes; boolean props (disabled, hidden, checked,
 * selected, required, multiple) and `value` are set as properties.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "on") {
      for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    } else if (k === "data") {
      for (const [dk, dv] of Object.entries(v)) {
        if (dv !== undefined && dv !== null) el.dataset[dk] = String(dv);
      }
    } else if (k === "class") {
      el.className = Array.isArray(v) ? v.filter(Boolean).join(" ") : v;
    } else if (["disabled", "hidden", "checked", "selected", "required", "multiple", "value"].includes(k)) {
      el[k] = v;
    } else {
      el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  append(el, children);
  return el;
}

/** Appends children: nodes, strings, numbers; arrays flattened; null skipped. */
export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replaces all children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/**
 * A table: `columns` are `{title, cell(row) -> node|string, num}`; `key(row)`
 * names a row (`data-key`). An empty list shows `empty` in one cell.
 */
export function table(columns, rows, opts = {}) {
  const head = h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : null }, c.title)));
  const body = h("tbody", {});
  if (!rows.length) {
    body.append(h("tr", {}, h("td", { class: "empty", colspan: columns.length }, opts.empty || "none")));
  }
  for (const row of rows) {
    body.append(
      h(
        "tr",
        { data: { key: opts.key ? opts.key(row) : undefined } },
        columns.map((c) => h("td", { class: c.num ? "num" : c.class || null }, c.cell(row))),
      ),
    );
  }
  return h("table", { id: opts.id, data: opts.data }, h("thead", {}, head), body);
}

/** `label: value` pairs. */
export function fields(pairs) {
  return h(
    "dl",
    { class: "fields" },
    pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v === null || v === undefined || v === "" ? "-" : v)]),
  );
}

const OK = new Set(["running", "ready", "succeeded", "healthy", "active", "protected", "in-sync", "member", "leader", "info", "ok"]);
const WARN = new Set([
  "starting", "stopping", "paused", "migrating", "installing", "importing", "queued", "degraded",
  "maintenance", "fallback", "unprotected", "syncing", "joining", "warning", "unknown", "cancelled",
]);
const BAD = new Set(["crashed", "guest_panicked", "install_failed", "failed", "offline", "fenced", "quarantined", "outdated", "error", "removed"]);

/** A state as a coloured badge (`data-state` holds the raw value). */
export function badge(state, text) {
  const s = state === null || state === undefined ? "-" : String(state);
  const kind = OK.has(s) ? "ok" : WARN.has(s) ? "warn" : BAD.has(s) ? "bad" : null;
  return h("span", { class: ["badge", kind], data: { state: s } }, text ?? s.replaceAll("_", " "));
}

/** MiB as a human size. */
export function mib(n) {
  if (n === null || n === undefined) return "-";
  if (n >= 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} TiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} GiB`;
  return `${n} MiB`;
}

/** Bytes as a human size. */
export function bytes(n) {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(2)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(0)} KiB`;
  return `${n} B`;
}

/** An RFC 3339 time in the browser's local time. */
export function time(t) {
  if (!t) return "-";
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? t : d.toLocaleString();
}

/** yes / no. */
export function yesno(b) {
  return b ? "yes" : "no";
}

/** A job's progress: a bar and the percentage. */
export function progress(p, id) {
  const pct = Math.round((p || 0) * 100);
  return h("span", {}, h("progress", { max: 100, value: pct, id, data: { progress: pct } }), ` ${pct}%`);
}

/** Shows a message in the banner at the top (`kind`: error or info). */
export function flash(text, kind = "info") {
  const el = document.getElementById("flash");
  el.dataset.kind = kind;
  el.textContent = text;
  el.hidden = false;
}

let pending = null;

/** Shows a message once the next page is drawn (a navigation clears the banner). */
export function flashNext(text, kind = "info") {
  pending = [text, kind];
}

/** Hides the banner, or shows the message kept for this page by flashNext. */
export function clearFlash() {
  if (pending) {
    const [text, kind] = pending;
    pending = null;
    flash(text, kind);
    return;
  }
  const el = document.getElementById("flash");
  el.hidden = true;
  el.textContent = "";
}

/** Shows an API error (or any error) in the banner. */
export function showError(err) {
  flash(err && err.message ? err.message : String(err), "error");
}

/**
 * A button that acts only when pressed twice within 4 s (for deletions:
 * no modal dialog). `act` runs on the second press.
 */
export function twoStep(attrs, label, act) {
  let armed = null;
  const btn = h("button", { type: "button", class: "danger", ...attrs }, label);
  btn.addEventListener("click", async () => {
    if (!armed) {
      btn.textContent = `Really ${label.toLowerCase()}?`;
      armed = setTimeout(() => {
        armed = null;
        btn.textContent = label;
      }, 4000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    btn.textContent = label;
    await act();
  });
  return btn;
}

/** The values of a form's named fields (checkboxes as booleans). */
export function formValues(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    out[el.name] = el.type === "checkbox" ? el.checked : el.value.trim();
  }
  return out;
}

/** A labelled input. */
export function field(label, input, hint) {
  if (input.type === "checkbox") {
    return h("label", { class: "check" }, input, label, hint ? h("span", { class: "hint" }, hint) : null);
  }
  return h("label", {}, label, input, hint ? h("span", { class: "hint" }, hint) : null);
}

/** A `<select>` of `[value, text]` options. */
export function select(attrs, options, selected) {
  return h(
    "select",
    attrs,
    options.map(([v, t]) => h("option", { value: v, selected: v === selected }, t)),
  );
}

/**
 * A change detector for polled data: the function it returns tells whether
 * `value` differs from the one it saw last (so an unchanged table is not
 * drawn again, and a half-pressed button in it keeps its state).
 */
export function differ() {
  let last;
  return (value) => {
    const s = JSON.stringify(value);
    if (s === last) return false;
    last = s;
    return true;
  };
}
