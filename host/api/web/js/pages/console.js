// A VM's live serial console in the page: the history and then the live
// output of GET /api/v1/vms/{id}/console (a streamed body read with fetch
// and a ReadableStream), and a line to type into it (POST .../console).

import * as api from "../api.js";
import { session, gate, needs } from "../session.js";
import { h, showError } from "../dom.js";

/** Bytes of history asked for when the console is opened. */
const TAIL = 65536;
/** Most characters kept in the page. */
const KEEP = 262144;
/** States in which the VM's QEMU runs, so its console is live. */
const LIVE = ["installing", "starting", "running", "paused", "stopping", "migrating"];

/**
 * Terminal output as plain text: escape sequences dropped, a carriage
 * return ending a line kept as the line end, a lone one starting the line
 * again, other control characters dropped.
 */
export function plain(s) {
  return s
    .replace(/\x1b\[[0-9;?]*[ -/]*[@-~]/g, "")
    .replace(/\x1b[()][0-9A-Za-z]/g, "")
    .replace(/\x1b[=>78DEHMc]/g, "")
    .replace(/\r+\n/g, "\n")
    .replace(/[^\n]*\r/g, "")
    .replace(/[\x00-\x08\x0b-\x1f\x7f]/g, "");
}

/** The console panel of VM `name`; `update(vm)` (re)connects while it runs. */
export function consolePanel(ctx, name) {
  const out = h("pre", { id: "console-output", class: "console", tabindex: 0 });
  const status = h("span", { id: "console-status", class: "muted", data: { state: "idle" } }, "not connected");
  const input = h("input", {
    id: "console-input",
    placeholder: "a line to type; Enter sends it",
    autocomplete: "off",
    spellcheck: "false",
  });
  const send = h("button", { id: "console-send", type: "submit" }, "Send");
  const ctrlC = h("button", { id: "console-ctrl-c", type: "button", title: "send Ctrl-C" }, "Ctrl-C");
  for (const el of [input, send, ctrlC]) gate(el, "operator");
  const form = h("form", { class: "console-input", id: "console-form" }, input, send, ctrlC);
  const el = h(
    "div",
    { class: "panel", id: "console-panel" },
    h("div", { class: "toolbar" }, h("h2", {}, "Serial console"), h("span", { class: "spacer" }), status),
    out,
    form,
  );

  let raw = "";
  let stream = null;
  let drawn = null;
  let opened = false;

  const setStatus = (state, text) => {
    status.dataset.state = state;
    status.textContent = text;
  };
  const draw = () => {
    drawn = null;
    const atBottom = out.scrollTop + out.clientHeight >= out.scrollHeight - 24;
    out.textContent = plain(raw);
    if (atBottom) out.scrollTop = out.scrollHeight;
  };
  const write = (text) => {
    raw += text;
    if (raw.length > KEEP) raw = raw.slice(raw.length - KEEP);
    if (!drawn) drawn = setTimeout(draw, 50);
  };

  async function connect(running) {
    const ac = new AbortController();
    stream = ac;
    ctx.onLeave(() => ac.abort());
    raw = "";
    setStatus("connecting", "connecting…");
    try {
      await api.followConsole(name, TAIL, ac.signal, (t) => {
        if (status.dataset.state === "connecting") {
          setStatus("live", running ? "live" : "the VM is not running: its last output");
        }
        write(t);
      });
      if (ctx.alive()) {
        setStatus("ended", running ? "disconnected (the VM stopped?)" : "the VM is not running: its last output");
      }
    } catch (e) {
      if (e.name !== "AbortError" && ctx.alive()) setStatus("error", e.message);
    } finally {
      if (stream === ac) stream = null;
      if (drawn) {
        clearTimeout(drawn);
        draw();
      }
    }
  }

  async function type(data) {
    try {
      await api.post(`/api/v1/vms/${api.seg(name)}/console`, { data });
    } catch (e) {
      showError(e);
    }
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const line = input.value;
    input.value = "";
    await type(`${line}\n`);
  });
  ctrlC.addEventListener("click", () => type("\x03"));

  return {
    el,
    /** Opens the console on the first call, and again whenever the VM runs and the stream ended. */
    update(vm) {
      if (!session.can("operator")) {
        setStatus("forbidden", `the console ${needs("operator")}`);
        out.hidden = true;
        form.hidden = true;
        return;
      }
      const running = LIVE.includes(vm.state);
      if (stream) return;
      if (!running && status.dataset.state === "ended") {
        setStatus("ended", `the VM is ${vm.state.replaceAll("_", " ")}: its last output`);
      }
      if (!opened || running) {
        opened = true;
        connect(running);
      }
    },
  };
}
