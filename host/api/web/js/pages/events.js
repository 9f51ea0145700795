// Events, followed: the last ones, then each new one as it is recorded.

import * as api from "../api.js";
import { badge, h, replace, table, time } from "../dom.js";

export const title = "Events";

const SHOWN = 500;

export async function render(ctx) {
  const list = h("div", { id: "event-list" });
  replace(ctx.main, h("h1", {}, "Events"), h("p", { class: "muted" }, "Newest first; new events appear as they are recorded."), list);
  let events = [];
  let since = null;
  await ctx.every(2000, async () => {
    const fresh = await api.get(`/api/v1/events${api.query({ since, limit: since === null ? 200 : 1000 })}`, {
      signal: ctx.signal,
    });
    if (since !== null && !fresh.length) return;
    events = events.concat(fresh).slice(-SHOWN);
    if (events.length) since = events[events.length - 1].seq;
    else since = 0;
    replace(
      list,
      table(
        [
          { title: "#", num: true, cell: (e) => String(e.seq) },
          { title: "Time", cell: (e) => time(e.time) },
          { title: "Severity", cell: (e) => badge(e.severity) },
          { title: "Kind", cell: (e) => e.kind },
          { title: "Target", cell: (e) => e.target || "-" },
          { title: "Host", cell: (e) => e.host || "-" },
          { title: "What", cell: (e) => e.message },
        ],
        events.slice().reverse(),
        { id: "events-table", key: (e) => String(e.seq), empty: "no event yet" },
      ),
    );
  });
}
