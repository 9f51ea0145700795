// Virtual switches: list, create, delete.

import * as api from "../api.js";
import { session } from "../session.js";
import { differ, field, h, replace, table } from "../dom.js";
import { confirmButton, perform } from "../actions.js";

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
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const body = { name: form.elements.name.value.trim() };
    if (form.elements.uplink.value.trim()) body.uplink = form.elements.uplink.value.trim();
    if (form.elements.vlan.value) body.vlan = Number(form.elements.vlan.value);
    perform(async () => {
      await api.post("/api/v1/vswitches", body);
      form.reset();
      return `vSwitch ${body.name} created.`;
    }, refresh);
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
              confirmButton({ data: { vswitch: s.name } }, "Delete", "admin", async () => {
                await api.del(`/api/v1/vswitches/${api.seg(s.name)}`);
                return `vSwitch ${s.name} deleted.`;
              }, refresh),
          },
        ],
        switches,
        { id: "vswitches-table", key: (s) => s.name, empty: "no vSwitch" },
      ),
    );
  };
  await ctx.every(5000, refresh);
}
