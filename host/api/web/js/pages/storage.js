// Storage pools of a host and the volumes of a pool: list, create, delete.

import * as api from "../api.js";
import { session, gate } from "../session.js";
import { differ, field, flash, h, mib, replace, select, showError, table, twoStep, yesno } from "../dom.js";

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
  poolForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const p = await api.post(`/api/v1/pools${q}`, values(poolForm));
      flash(`Pool ${p.name} created.`, "info");
      poolForm.reset();
      await refresh(true);
    } catch (e) {
      showError(e);
    }
  });

  const volumeForm = h(
    "form",
    { class: "inline", id: "volume-create-form" },
    field("Name", h("input", { name: "name", id: "volume-name", required: true })),
    field("Size (MiB)", h("input", { name: "size_mib", id: "volume-size", type: "number", min: 1, required: true })),
    field("Format", select({ name: "format", id: "volume-format" }, [["qcow2", "qcow2"], ["raw", "raw"]], "qcow2")),
    h("button", { type: "submit", class: "primary", id: "volume-create-submit" }, "Create volume"),
  );
  volumeForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const v = values(volumeForm);
    try {
      await api.post(`/api/v1/pools/${api.seg(pool)}/volumes${q}`, { name: v.name, size_mib: Number(v.size_mib), format: v.format });
      flash(`Volume ${v.name} created in ${pool}.`, "info");
      volumeForm.reset();
      await refresh(true);
    } catch (e) {
      showError(e);
    }
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
              gate(
                twoStep({ data: { deletePool: p.name } }, "Delete", async () => {
                  try {
                    await api.del(`/api/v1/pools/${api.seg(p.name)}${q}`);
                    flash(`Pool ${p.name} removed.`, "info");
                  } catch (e) {
                    showError(e);
                  }
                  await refresh(true);
                }),
                "admin",
              ),
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
              gate(
                twoStep({ data: { deleteVolume: v.name } }, "Delete", async () => {
                  try {
                    await api.del(`/api/v1/pools/${api.seg(pool)}/volumes/${api.seg(v.name)}${q}`);
                    flash(`Volume ${v.name} deleted.`, "info");
                  } catch (e) {
                    showError(e);
                  }
                  await refresh(true);
                }),
                "admin",
              ),
          },
        ],
        vs,
        { id: "volumes-table", key: (v) => v.name, empty: "no volume" },
      ),
    );
  };
  await ctx.every(5000, refresh);
}
