// The policy plugins: which one decides each world on each host, its
// signer and version, its quarantine state and counts, each host's recent
// decisions (`/api/v1/decisions?host=`: who decided, the outcome, the cause
// and the time taken; the inputs and answers stay in the host's journal for
// `nasvisor plugin replay`), and the recent plugin events (faults,
// fallbacks, quarantines, resets).

import * as api from "../api.js";
import { badge, differ, h, replace, table, time } from "../dom.js";
import { actionButton } from "../actions.js";

export const title = "Plugins";

export async function render(ctx) {
  const list = h("div", { id: "plugin-list" });
  const hostsBox = h("div", { id: "plugin-hosts" });
  const eventsBox = h("div", { id: "plugin-events" });
  const decisionsBox = h("div", { id: "plugin-decisions" });
  replace(
    ctx.main,
    h("h1", {}, "Plugins"),
    list,
    h("h2", {}, "On each host"),
    hostsBox,
    h("h2", {}, "Recent decisions"),
    h("p", { class: "muted" }, "The last decisions of each host (it keeps 200), newest first. Their inputs and answers are in the host's journal."),
    decisionsBox,
    h("h2", {}, "Recent plugin events"),
    h("p", { class: "muted" }, "Faults, fallbacks to the built-in default, quarantines and resets. Each decision is journaled on its host."),
    eventsBox,
  );
  const changed = differ();
  const refresh = async (force) => {
    const [plugins, events] = await Promise.all([
      api.get("/api/v1/plugins", { signal: ctx.signal }),
      api.get("/api/v1/events?limit=500", { signal: ctx.signal }),
    ]);
    const pluginEvents = events.filter((e) => e.kind.startsWith("plugin-")).reverse().slice(0, 50);
    const hosts = [...new Set(plugins.flatMap((p) => p.hosts.map((x) => x.host)))];
    // An offline host cannot answer: its decisions are left out.
    const perHost = await Promise.all(
      hosts.map((host) =>
        api.get(`/api/v1/decisions?limit=50&host=${encodeURIComponent(host)}`, { signal: ctx.signal }).catch(() => []),
      ),
    );
    const decisions = perHost.flat().sort((a, b) => b.time.localeCompare(a.time)).slice(0, 100);
    if (!changed([plugins, pluginEvents, decisions]) && force !== true) return;
    replace(
      decisionsBox,
      table(
        [
          { title: "Time", cell: (d) => time(d.time) },
          { title: "Host", cell: (d) => d.host },
          { title: "World", cell: (d) => d.world },
          { title: "Function", cell: (d) => d.function },
          { title: "Plugin", cell: (d) => d.plugin || "built-in default" },
          { title: "Outcome", cell: (d) => badge(d.outcome) },
          { title: "Cause", cell: (d) => d.cause || "-" },
          { title: "ms", num: true, cell: (d) => (d.duration_us / 1000).toFixed(1) },
        ],
        decisions,
        { id: "plugin-decisions-table", key: (d) => `${d.host}/${d.time}/${d.world}/${d.function}`, empty: "no decision yet" },
      ),
    );
    replace(
      list,
      table(
        [
          { title: "World", cell: (p) => h("strong", {}, p.world) },
          { title: "Plugin", cell: (p) => p.name },
          { title: "Version", cell: (p) => p.version },
          { title: "Signer", cell: (p) => p.vendor },
          { title: "State", cell: (p) => badge(p.state) },
          { title: "Decisions", num: true, cell: (p) => String(p.decisions) },
          { title: "Faults", num: true, cell: (p) => `${p.failures} (${p.consecutive_failures} in a row)` },
          { title: "Fallbacks", num: true, cell: (p) => String(p.fallbacks) },
          { title: "Last fault", cell: (p) => p.last_failure || "-" },
          {
            title: "",
            class: "actions",
            cell: (p) =>
              actionButton(
                { data: { reset: p.world }, disabled: !p.hosts.some((x) => x.state === "quarantined") },
                "Lift quarantine",
                "admin",
                async () => (await api.post(`/api/v1/plugins/${api.seg(p.world)}/reset`)).message,
                refresh,
              ),
          },
        ],
        plugins,
        { id: "plugins-table", key: (p) => p.world, empty: "no plugin" },
      ),
    );
    const rows = plugins.flatMap((p) => p.hosts.map((x) => ({ ...x, name: p.name })));
    replace(
      hostsBox,
      table(
        [
          { title: "Host", cell: (x) => x.host },
          { title: "World", cell: (x) => x.world },
          { title: "Plugin", cell: (x) => x.plugin || "built-in default" },
          { title: "State", cell: (x) => badge(x.state) },
          { title: "Decisions", num: true, cell: (x) => String(x.decisions) },
          { title: "Faults", num: true, cell: (x) => `${x.failures} (${x.consecutive_failures} in a row)` },
          { title: "Fallbacks", num: true, cell: (x) => String(x.fallbacks) },
          { title: "Last fault", cell: (x) => x.last_failure || "-" },
          { title: "Updated", cell: (x) => time(x.updated_at) },
        ],
        rows,
        { id: "plugin-hosts-table", key: (x) => `${x.host}/${x.world}` },
      ),
    );
    replace(
      eventsBox,
      table(
        [
          { title: "Time", cell: (e) => time(e.time) },
          { title: "Severity", cell: (e) => badge(e.severity) },
          { title: "Kind", cell: (e) => e.kind },
          { title: "Host", cell: (e) => e.host || "-" },
          { title: "What", cell: (e) => e.message },
        ],
        pluginEvents,
        { id: "plugin-events-table", key: (e) => String(e.seq), empty: "no plugin event" },
      ),
    );
  };
  await ctx.every(5000, refresh);
}
