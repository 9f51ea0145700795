// The VM list, with the power actions an operator may take from it.

import * as api from "../api.js";
import { session } from "../session.js";
import { badge, differ, h, mib, replace, table } from "../dom.js";
import { actionButton } from "../actions.js";

export const title = "VMs";

/** Power operations: the button, its body, and the states it applies to. */
export const POWER = [
  { op: "start", label: "Start", body: { op: "start" }, states: ["stopped", "crashed", "guest_panicked"] },
  { op: "shutdown", label: "Stop", body: { op: "shutdown" }, states: ["running", "paused"], hint: "ACPI shutdown" },
  {
    op: "force_off",
    label: "Force off",
    body: { op: "force_off" },
    states: ["running", "paused", "stopping", "starting", "guest_panicked"],
  },
  { op: "reboot", label: "Reboot", body: { op: "reboot" }, states: ["running"] },
  { op: "pause", label: "Pause", body: { op: "pause" }, states: ["running"] },
  { op: "resume", label: "Resume", body: { op: "resume" }, states: ["paused"] },
];

/**
 * The power buttons of a VM (`data-action` = the operation), each enabled
 * when the VM's state allows it and the caller is an operator or admin.
 */
export function powerButtons(vm, after, idPrefix) {
  return POWER.map((p) =>
    actionButton(
      {
        id: idPrefix ? `${idPrefix}-${p.op === "shutdown" ? "stop" : p.op.replace("_", "-")}` : null,
        data: { action: p.op, vm: vm.name },
        title: p.hint,
        disabled: !p.states.includes(vm.state),
      },
      p.label,
      "operator",
      async () => {
        const now = await api.post(`/api/v1/vms/${api.seg(vm.name)}/power`, p.body);
        return `${p.label}: VM ${vm.name} is ${now.state.replaceAll("_", " ")}.`;
      },
      after,
    ),
  );
}

export async function render(ctx) {
  const list = h("div", { id: "vm-list" });
  const create = h("a", { class: "button primary", href: "#/vms/new", id: "vm-new" }, "Create VM");
  replace(
    ctx.main,
    h("div", { class: "toolbar" }, h("h1", {}, "Virtual machines"), h("span", { class: "spacer" }), session.can("admin") ? create : null),
    list,
  );
  const changed = differ();
  const refresh = async (force) => {
    const vms = await api.get("/api/v1/vms", { signal: ctx.signal });
    if (!changed(vms) && force !== true) return;
    vms.sort((a, b) => a.name.localeCompare(b.name));
    replace(
      list,
      table(
        [
          { title: "Name", cell: (v) => h("a", { href: `#/vms/${api.seg(v.name)}`, data: { vmLink: v.name } }, v.name) },
          {
            title: "State",
            cell: (v) => h("span", {}, badge(v.state), v.state_reason ? h("div", { class: "hint" }, v.state_reason) : null),
          },
          { title: "Host", cell: (v) => v.host || "-" },
          { title: "vCPUs", num: true, cell: (v) => String(v.vcpus) },
          { title: "Memory", num: true, cell: (v) => mib(v.memory_mib) },
          { title: "Image", cell: (v) => v.image || "-" },
          { title: "HA", cell: (v) => (v.ha ? badge(v.ha_status ? v.ha_status.state : "unknown", v.ha_status ? v.ha_status.state : "yes") : "no") },
          { title: "Actions", class: "actions", cell: (v) => powerButtons(v, refresh) },
        ],
        vms,
        { id: "vms-table", key: (v) => v.name, empty: "no VM yet" },
      ),
    );
  };
  await ctx.every(3000, refresh);
}
