// Storage pools of a host and the volumes of a pool: list, create, delete.

import * as api from "../api.js";
import { session } from "../session.js";
import { differ, field, h, mib, replace, select, table, yesno } from "../dom.js";
import { confirmButton, perform } from "../actions.js";

export const title = "Storage";

function values(form) {
  const v = {};
  for (const el of form.elements) {
    if (el.name) v[el.name] = el.type === "checkbox" ? el.checked : el.value.trim();
  }
  return v;
}

/** `#/storage[/pool]?host=` for the host and pool chosen. */
function link(pool, host) {
  return `#/storage${pool ? `/${api.seg(pool)}` : ""}${api.query({ host })}`;
}

export async function render(ctx, pool, params) {
  // `pool` is absent on #/storage: then the params come first.
  if (pool instanceof URLSearchParams) {
    params = pool;
    pool = null;
  }
  const host = params.get("host") || "";
  const admin = session.can("admin");
  const hosts = await api.get("/api/v1/hosts", { signal: ctx.signal });
  const hostSel = select(
    { id: "storage-host" },
    [["", "this host"], ...hosts.map((x) => [x.id, x.name])],
    host,
  );
  hostSel.addEventListener("change", () => {
    location.hash = link(null, hostSel.value);
  });
  const pools = h("div", { id: "pool-list" });
  const volumes = h("div", { id: "volume-list" });
  const q = api.query({ host });

  const poolForm = h(
    "form",
    { class: "inline", id: "pool-create-form" },
    field("Name", h("input", { name: "name", id: "pool-name", required: true })),
    field("Directory", h("input", { name: "path", id: "pool-path", required: true, placeholder: "/srv/vm-pool" })),
    field("", h("input", { name: "shared", id: "pool-shared", type: "checkbox" }), "shared by every host"),
    h("button", { type: "submit", class: "primary", id: "pool-create-submit" }, "Create pool"),
  );
  poolForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    perform(async () => {
      const p = await api.post(`/api/v1/pools${q}`, values(poolForm));
      poolForm.reset();
      return `Pool ${p.name} created.`;
    }, refresh);
  });

  const volumeForm = h(
    "form",
    { class: "inline", id: "volume-create-form" },
    field("Name", h("input", { name: "name", id: "volume-name", required: true })),
    field("Size (MiB)", h("input", { name: "size_mib", id: "volume-size", type: "number", min: 1, required: true })),
    field("Format", select({ name: "format", id: "volume-format" }, [["qcow2", "qcow2"], ["raw", "raw"]], "qcow2")),
    h("button", { type: "submit", class: "primary", id: "volume-create-submit" }, "Create volume"),
  );
  volumeForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = values(volumeForm);
    perform(async () => {
      await api.post(`/api/v1/pools/${api.seg(pool)}/volumes${q}`, { name: v.name, size_mib: Number(v.size_mib), format: v.format });
      volumeForm.reset();
      return `Volume ${v.name} created in ${pool}.`;
    }, refresh);
  });

  replace(
    ctx.main,
    h("div", { class: "toolbar" }, h("h1", {}, "Storage"), h("span", { class: "spacer" }), h("label", { class: "check" }, "Host ", hostSel)),
    h("h2", {}, "Pools"),
    pools,
    admin ? h("div", { class: "panel" }, poolForm) : null,
    pool ? [h("h2", {}, `Volumes of ${pool}`), volumes, admin ? h("div", { class: "panel" }, volumeForm) : null] : null,
  );

  const changed = differ();
  const refresh = async (force) => {
    const [ps, vs] = await Promise.all([
      api.get(`/api/v1/pools${q}`, { signal: ctx.signal }),
      pool ? api.get(`/api/v1/pools/${api.seg(pool)}/volumes${q}`, { signal: ctx.signal }) : [],
    ]);
    if (!changed([ps, vs]) && force !== true) return;
    replace(
      pools,
      table(
        [
          { title: "Name", cell: (p) => h("a", { href: link(p.name, host), data: { pool: p.name } }, p.name) },
          { title: "Directory", cell: (p) => h("span", { class: "mono" }, p.path) },
          { title: "Free", num: true, cell: (p) => mib(p.free_mib) },
          { title: "Capacity", num: true, cell: (p) => mib(p.capacity_mib) },
          { title: "Host", cell: (p) => p.host || "every host" },
          { title: "Shared", cell: (p) => yesno(p.shared) },
          {
            title: "",
            class: "actions",
            cell: (p) =>
              confirmButton({ data: { deletePool: p.name } }, "Delete", "admin", async () => {
                await api.del(`/api/v1/pools/${api.seg(p.name)}${q}`);
                return `Pool ${p.name} removed.`;
              }, refresh),
          },
        ],
        ps,
        { id: "pools-table", key: (p) => p.name, empty: "no pool" },
      ),
    );
    if (!pool) return;
    replace(
      volumes,
      table(
        [
          { title: "Name", cell: (v) => v.name },
          { title: "Size", num: true, cell: (v) => mib(v.size_mib) },
          { title: "Format", cell: (v) => v.format },
          { title: "Used by", cell: (v) => (v.used_by ? h("a", { href: `#/vms/${api.seg(v.used_by)}` }, v.used_by) : "-") },
          {
            title: "",
            class: "actions",
            cell: (v) =>
              confirmButton({ data: { deleteVolume: v.name } }, "Delete", "admin", async () => {
                await api.del(`/api/v1/pools/${api.seg(pool)}/volumes/${api.seg(v.name)}${q}`);
                return `Volume ${v.name} deleted.`;
              }, refresh),
          },
        ],
        vs,
        { id: "volumes-table", key: (v) => v.name, empty: "no volume" },
      ),
    );
  };
  await ctx.every(5000, refresh);
}
