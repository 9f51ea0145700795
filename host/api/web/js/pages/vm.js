// One VM: its state (polled), power actions, migration, deletion, its
// install job, and its live serial console.

import * as api from "../api.js";
import { session } from "../session.js";
import { badge, fields, flashNext, h, mib, progress, replace, select, table, time, yesno } from "../dom.js";
import { actionButton, confirmButton } from "../actions.js";
import { powerButtons } from "./vms.js";
import { consolePanel } from "./console.js";

export const title = "VM";

function haText(vm) {
  if (!vm.ha) return "no";
  const s = vm.ha_status;
  if (!s) return "yes";
  return h(
    "span",
    {},
    badge(s.state),
    ` active ${s.active || "-"}, passive ${s.passive || "-"}`,
    s.reason ? ` (${s.reason})` : "",
    s.replica ? [" · replica ", badge(s.replica.state), s.replica.progress != null ? ` ${s.replica.progress}%` : ""] : "",
  );
}

export async function render(ctx, name) {
  const head = h("div", { class: "toolbar" });
  const powerBar = h("div", { class: "toolbar", id: "vm-power" });
  const info = h("div", { class: "panel", id: "vm-info" });
  const jobBox = h("div", { id: "vm-job" });
  const disks = h("div", { id: "vm-disks" });
  const nics = h("div", { id: "vm-nics" });
  const manage = h("div", { class: "row", id: "vm-manage" });
  const con = consolePanel(ctx, name);
  replace(
    ctx.main,
    head,
    powerBar,
    h("div", { class: "row" }, info, h("div", { class: "panel" }, h("h2", {}, "Disks"), disks, h("h2", {}, "Network"), nics)),
    jobBox,
    con.el,
    manage,
  );

  let jobId = null;
  const hosts = await api.get("/api/v1/hosts", { signal: ctx.signal }).catch((e) => {
    if (e.name === "AbortError") throw e;
    return [];
  });

  // Migrate and delete: drawn once, they keep what the user typed.
  const target = select(
    { id: "vm-migrate-host" },
    hosts.map((x) => [x.id, `${x.name}${x.online ? "" : " (offline)"}`]),
  );
  const downtime = h("input", { id: "vm-migrate-downtime", type: "number", min: 1, max: 10000, placeholder: "300" });
  const migrate = actionButton({ id: "vm-migrate" }, "Migrate", "operator", async () => {
    const body = { host: target.value };
    if (downtime.value) body.max_downtime_ms = Number(downtime.value);
    const job = await api.post(`/api/v1/vms/${api.seg(name)}/migrate`, body);
    jobId = job.id;
    return `Migration of ${name} to ${target.value} started (job ${job.id}).`;
  }, () => {
    migrate.disabled = !session.can("operator");
    return refresh();
  });
  const deleteDisks = h("input", { type: "checkbox", id: "vm-delete-disks", checked: true });
  const remove = confirmButton({ id: "vm-delete" }, "Delete", "admin", async () => {
    await api.del(`/api/v1/vms/${api.seg(name)}${api.query({ delete_disks: deleteDisks.checked })}`);
    flashNext(`VM ${name} deleted.`, "info");
    location.hash = "#/vms";
  });
  replace(
    manage,
    h(
      "div",
      { class: "panel" },
      h("h2", {}, "Migrate"),
      h("form", { class: "inline" }, h("label", {}, "To host", target), h("label", {}, "Max downtime (ms)", downtime), migrate),
    ),
    h(
      "div",
      { class: "panel" },
      h("h2", {}, "Delete"),
      h("div", { class: "inline" }, h("label", { class: "check" }, deleteDisks, "also delete its disks"), " ", remove),
    ),
  );

  const refresh = async () => {
    const vm = await api.get(`/api/v1/vms/${api.seg(name)}`, { signal: ctx.signal });
    replace(
      head,
      h("h1", {}, "VM ", h("span", { id: "vm-name" }, vm.name)),
      h("span", { id: "vm-state", data: { state: vm.state } }, badge(vm.state)),
      vm.state_reason ? h("span", { class: "muted", id: "vm-state-reason" }, vm.state_reason) : null,
    );
    replace(powerBar, powerButtons(vm, refresh, "vm"), h("a", { class: "button", href: "#/vms" }, "All VMs"));
    replace(
      info,
      fields([
        ["id", h("span", { class: "mono" }, vm.id)],
        ["host", vm.host || "not placed yet"],
        ["vCPUs", String(vm.vcpus)],
        ["memory", mib(vm.memory_mib)],
        ["firmware", vm.firmware],
        ["image", vm.image || "-"],
        ["QEMU", vm.pid ? `pid ${vm.pid}${vm.accel ? `, ${vm.accel}` : ""}${vm.qemu_state ? `, ${vm.qemu_state}` : ""}` : "not running"],
        ["autostart", yesno(vm.autostart)],
        ["HA", haText(vm)],
        ["description", vm.description || "-"],
        ["created", time(vm.created_at)],
      ]),
    );
    replace(
      disks,
      table(
        [
          { title: "Pool", cell: (d) => d.pool },
          { title: "Volume", cell: (d) => d.volume },
          { title: "Size", num: true, cell: (d) => mib(d.size_mib) },
          { title: "Role", cell: (d) => d.role },
        ],
        vm.disks,
        { empty: "no disk" },
      ),
    );
    replace(
      nics,
      table(
        [
          { title: "vSwitch", cell: (n) => n.vswitch },
          { title: "MAC", cell: (n) => h("span", { class: "mono" }, n.mac) },
          { title: "Model", cell: (n) => n.model },
          { title: "Tap", cell: (n) => n.tap || "-" },
        ],
        vm.nics,
        { empty: "no NIC" },
      ),
    );
    if (!jobId && vm.install_job && vm.state === "installing") jobId = vm.install_job;
    if (jobId) {
      const job = await api.get(`/api/v1/jobs/${api.seg(jobId)}`, { signal: ctx.signal });
      replace(
        jobBox,
        h(
          "div",
          { class: "panel", data: { job: job.id, jobState: job.state } },
          h("h2", {}, `Job: ${job.kind}`),
          fields([
            ["state", badge(job.state)],
            ["progress", progress(job.progress, "vm-job-progress")],
            ["step", job.message || "-"],
            job.error ? ["error", h("span", { class: "error" }, job.error)] : null,
            ["started", time(job.created_at)],
            job.finished_at ? ["finished", time(job.finished_at)] : null,
          ]),
        ),
      );
      if (job.finished_at) jobId = null;
    }
    con.update(vm);
  };
  await ctx.every(2000, refresh);
}
