// Creating a VM: from a system image with its install settings (host
// name, a user with an SSH key, packages, network, disk), or blank.

import * as api from "../api.js";
import { session, needs } from "../session.js";
import { field, flashNext, h, replace, select, showError } from "../dom.js";

export const title = "Create VM";

function num(v) {
  return v === "" ? undefined : Number(v);
}

/** The VmCreate body from the form's values. */
export function body(v) {
  const b = {
    name: v.name,
    vcpus: num(v.vcpus),
    memory_mib: num(v.memory_mib),
    autostart: v.autostart,
    ha: v.ha,
    firmware: v.firmware,
  };
  if (v.description) b.description = v.description;
  if (v.host) b.host = v.host;
  if (v.vswitch) b.nics = [{ vswitch: v.vswitch }];
  if (v.image) {
    b.image = v.image;
    const install = {};
    if (v.hostname) install.hostname = v.hostname;
    if (v.pool) install.pool = v.pool;
    if (v.disk_gib) install.disk_size_gib = num(v.disk_gib);
    if (v.timezone) install.timezone = v.timezone;
    if (v.packages) install.packages = v.packages.split(/[\s,]+/).filter(Boolean);
    if (v.user) {
      install.users = [
        {
          name: v.user,
          sudo: v.sudo,
          ssh_authorized_keys: v.ssh_key ? v.ssh_key.split("\n").map((k) => k.trim()).filter(Boolean) : [],
        },
      ];
    }
    if (v.vswitch && v.dhcp) install.network = [{ dhcp4: true }];
    b.install = install;
  } else if (v.disk_gib) {
    b.disks = [{ pool: v.pool || "default", size_mib: num(v.disk_gib) * 1024 }];
  }
  return b;
}

export async function render(ctx) {
  if (!session.can("admin")) {
    replace(ctx.main, h("h1", {}, "Create VM"), h("p", { class: "error" }, `Creating a VM ${needs("admin")}.`));
    return;
  }
  const [images, pools, vswitches, hosts] = await Promise.all([
    api.get("/api/v1/images", { signal: ctx.signal }),
    api.get("/api/v1/pools", { signal: ctx.signal }),
    api.get("/api/v1/vswitches", { signal: ctx.signal }),
    api.get("/api/v1/hosts", { signal: ctx.signal }),
  ]);
  const ready = images.filter((i) => i.state === "ready");
  const input = (name, attrs = {}) => h("input", { name, id: `vm-${name.replaceAll("_", "-")}`, ...attrs });
  const imageSel = select(
    { name: "image", id: "vm-image" },
    [["", "none (a blank VM)"], ...ready.map((i) => [i.name, `${i.name}${i.os_variant ? ` (${i.os_variant})` : ""}`])],
    ready.length ? ready[0].name : "",
  );
  const installBox = h(
    "fieldset",
    { id: "vm-install" },
    h("legend", {}, "Install settings (from the image)"),
    field("Guest host name", input("hostname", { placeholder: "the VM's name" })),
    field("User", input("user", { placeholder: "e.g. admin", pattern: "[a-z_][a-z0-9_-]{0,31}" })),
    field("SSH public keys", h("textarea", { name: "ssh_key", id: "vm-ssh-key", placeholder: "ssh-ed25519 AAAA... one per line" })),
    field("", input("sudo", { type: "checkbox", checked: true }), "password-less sudo for the user"),
    field("Packages", input("packages", { placeholder: "space separated" })),
    field("Time zone", input("timezone", { placeholder: "e.g. Europe/Berlin" })),
    field("", input("dhcp", { type: "checkbox", checked: true }), "configure the NIC by DHCP"),
  );
  const syncInstall = () => {
    installBox.hidden = !imageSel.value;
  };
  imageSel.addEventListener("change", syncInstall);
  const submit = h("button", { type: "submit", class: "primary", id: "vm-create-submit" }, "Create");
  const form = h(
    "form",
    { class: "stack", id: "vm-create-form" },
    field("Name", input("name", { required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._-]{0,63}" })),
    h(
      "div",
      { class: "row" },
      field("vCPUs", input("vcpus", { type: "number", min: 1, max: 256, value: "1", required: true })),
      field("Memory (MiB)", input("memory_mib", { type: "number", min: 64, value: "256", required: true })),
      field("Disk (GiB)", input("disk_gib", { type: "number", min: 1 }), "the image's size when empty"),
    ),
    field("System image", imageSel),
    field("Pool", select({ name: "pool", id: "vm-pool" }, [["", "default"], ...pools.map((p) => [p.name, p.name])], "")),
    field("Network", select({ name: "vswitch", id: "vm-vswitch" }, [["", "no NIC"], ...vswitches.map((s) => [s.name, s.name])], "")),
    field(
      "Host",
      select({ name: "host", id: "vm-host" }, [["", "the scheduler chooses"], ...hosts.map((x) => [x.id, x.name])], ""),
    ),
    field("Firmware", select({ name: "firmware", id: "vm-firmware" }, [["bios", "BIOS"], ["uefi", "UEFI"]], "bios")),
    field("Description", input("description")),
    field("", input("autostart", { type: "checkbox" }), "start with its host"),
    field("", input("ha", { type: "checkbox" }), "protect with HA (needs 3 hosts)"),
    installBox,
    submit,
  );
  syncInstall();
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const v = {};
    for (const el of form.elements) {
      if (el.name) v[el.name] = el.type === "checkbox" ? el.checked : el.value.trim();
    }
    submit.disabled = true;
    try {
      const vm = await api.post("/api/v1/vms", body(v));
      flashNext(`VM ${vm.name} created${vm.install_job ? ": installing" : ""}.`, "info");
      location.hash = `#/vms/${api.seg(vm.name)}`;
    } catch (e) {
      showError(e);
      submit.disabled = false;
    }
  });
  replace(ctx.main, h("h1", {}, "Create VM"), h("div", { class: "panel" }, form));
}
