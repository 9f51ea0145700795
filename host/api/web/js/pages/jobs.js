// Jobs with their live progress (polled every second), and cancelling one.

import * as api from "../api.js";
import { badge, differ, h, progress, replace, table, time } from "../dom.js";
import { actionButton } from "../actions.js";

export const title = "Jobs";

const FINAL = ["succeeded", "failed", "cancelled"];

export async function render(ctx) {
  const list = h("div", { id: "job-list" });
  replace(ctx.main, h("h1", {}, "Jobs"), list);
  const changed = differ();
  const refresh = async (force) => {
    const jobs = await api.get("/api/v1/jobs", { signal: ctx.signal });
    if (!changed(jobs) && force !== true) return;
    jobs.sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
    replace(
      list,
      table(
        [
          { title: "Job", cell: (j) => h("span", { class: "mono", title: j.id }, j.id.slice(0, 8)) },
          { title: "Kind", cell: (j) => j.kind },
          { title: "Target", cell: (j) => j.target || "-" },
          { title: "State", cell: (j) => badge(j.state) },
          { title: "Progress", cell: (j) => progress(j.progress) },
          {
            title: "Step",
            cell: (j) => h("span", {}, j.message || "-", j.error ? h("div", { class: "error" }, j.error) : null),
          },
          { title: "Started", cell: (j) => time(j.created_at) },
          { title: "Finished", cell: (j) => time(j.finished_at) },
          {
            title: "",
            class: "actions",
            cell: (j) =>
              FINAL.includes(j.state)
                ? ""
                : actionButton({ data: { cancel: j.id } }, "Cancel", "operator", async () => {
                    const r = await api.post(`/api/v1/jobs/${api.seg(j.id)}/cancel`);
                    return `Job ${j.id.slice(0, 8)} is ${r.state}.`;
                  }, refresh),
          },
        ],
        jobs,
        { id: "jobs-table", key: (j) => j.id, empty: "no job" },
      ),
    );
  };
  await ctx.every(1000, refresh);
}
