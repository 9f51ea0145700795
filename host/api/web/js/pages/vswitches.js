// Virtual switches: list, create, delete.

import * as api from "../api.js";
import { session, gate } from "../session.js";
import { differ, field, flash, h, replace, showError, table, twoStep } from "../dom.js";

export const title = "vSwitches";

export async function render(ctx) {
  const list = h("div", { id: "vswitch-list" });
  const form = h(
    "form",
    { class: "inline", id: "vswitch-create-form" },
    field("Name", h("input", { name: "name", id: "vswitch-name", required: true })),
    field("Uplink", h("input", { name: "uplink", id: "vswitch-uplink", placeholder: "none: internal" })),
    field("VLAN", h("input", { name: "vlan", id: "vswitch-vlan", type: "number", min: 1, max: 4094 })),
    h("button", { type: "submit", class: "primary", id: "vswitch-create-submit" }, "Create vSwitch"),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { name: form.elements.name.value.trim() };
    if (form.elements.uplink.value.trim()) body.uplink = form.elements.uplink.value.trim();
    if (form.elements.vlan.value) body.vlan = Number(form.elements.vlan.value);
    try {
      await api.post("/api/v1/vswitches", body);
      flash(`vSwitch ${body.name} created.`, "info");
      form.reset();
      await refresh(true);
    } catch (e) {
      showError(e);
    }
  });
  replace(ctx.main, h("h1", {}, "Virtual switches"), list, session.can("admin") ? h("div", { class: "panel" }, form) : null);
  const changed = differ();
  const refresh = async (force) => {
    const switches = await api.get("/api/v1/vswitches", { signal: ctx.signal });
    if (!changed(switches) && force !== true) return;
    replace(
      list,
      table(
        [
          { title: "Name", cell: (s) => s.name },
          { title: "Uplink", cell: (s) => s.uplink || "internal" },
          { title: "VLAN", cell: (s) => (s.vlan == null ? "-" : String(s.vlan)) },
          {
            title: "",
            class: "actions",
            cell: (s) =>
              gate(
                twoStep({ data: { vswitch: s.name } }, "Delete", async () => {
                  try {
                    await api.del(`/api/v1/vswitches/${api.seg(s.name)}`);
                    flash(`vSwitch ${s.name} deleted.`, "info");
                  } catch (e) {
                    showError(e);
                  }
                  await refresh(true);
                }),
                "admin",
              ),
          },
        ],
        switches,
        { id: "vswitches-table", key: (s) => s.name, empty: "no vSwitch" },
      ),
    );
  };
  await ctx.every(5000, refresh);
}
