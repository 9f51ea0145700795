// The cluster at a glance: the cluster and its leader, each host's CPUs,
// memory, storage and health, and the VMs' states with their HA status.

import * as api from "../api.js";
import { badge, fields, h, mib, replace, table, time, yesno } from "../dom.js";

export const title = "Overview";

/** Free and total space of the pools of `host` (its own ones), MiB. */
async function storageOf(host, signal) {
  try {
    const pools = await api.get(`/api/v1/pools${api.query({ host: host.id })}`, { signal });
    const own = pools.filter((p) => p.host === host.id || (!p.shared && !p.host));
    return {
      free: own.reduce((a, p) => a + p.free_mib, 0),
      capacity: own.reduce((a, p) => a + p.capacity_mib, 0),
      pools: own.length,
    };
  } catch (e) {
    if (e.name === "AbortError") throw e;
    return null;
  }
}

function storageCell(s) {
  if (!s) return "-";
  if (!s.pools) return "no pool";
  return `${mib(s.free)} free of ${mib(s.capacity)}`;
}

function healthCell(host) {
  return h(
    "span",
    {},
    badge(host.health),
    host.health_reasons.length ? h("div", { class: "hint" }, host.health_reasons.join("; ")) : null,
  );
}

function haCell(vm) {
  if (!vm.ha) return "-";
  const s = vm.ha_status;
  if (!s) return badge("unknown", "pending");
  return h(
    "span",
    {},
    badge(s.state),
    ` active ${s.active || "-"}, passive ${s.passive || "-"}`,
    s.reason ? h("div", { class: "hint" }, s.reason) : null,
    s.replica ? h("div", { class: "hint" }, "replica ", badge(s.replica.state), ` on ${s.replica.host}`) : null,
    s.last_move ? h("div", { class: "hint" }, s.last_move) : null,
  );
}

export async function render(ctx) {
  const clusterBox = h("div", { class: "panel", id: "cluster-panel" });
  const vmBox = h("div", { class: "panel", id: "vm-summary" });
  const hostBox = h("div", { id: "hosts" });
  const haBox = h("div", { id: "ha-vms" });
  replace(
    ctx.main,
    h("h1", {}, "Overview"),
    h("div", { class: "row" }, clusterBox, vmBox),
    h("h2", {}, "Hosts"),
    hostBox,
    h("h2", {}, "HA-protected VMs"),
    haBox,
  );
  await ctx.every(5000, async () => {
    const [cluster, hosts, vms] = await Promise.all([
      api.get("/api/v1/cluster", { signal: ctx.signal }),
      api.get("/api/v1/hosts", { signal: ctx.signal }),
      api.get("/api/v1/vms", { signal: ctx.signal }),
    ]);
    const storage = await Promise.all(hosts.map((host) => storageOf(host, ctx.signal)));
    const leader = hosts.find((x) => x.node_id === cluster.leader);
    replace(
      clusterBox,
      h("h2", {}, "Cluster"),
      fields([
        ["clustered", yesno(cluster.clustered)],
        cluster.cluster_id ? ["cluster id", h("span", { class: "mono" }, cluster.cluster_id)] : null,
        ["leader", leader ? `${leader.name} (node ${leader.node_id})` : cluster.leader ?? "none"],
        ["members", `${cluster.members.length || 1} of at most ${cluster.max_members}`],
        ["this host", `node ${cluster.this_node} at ${cluster.address}`],
      ]),
    );
    const byState = {};
    for (const v of vms) byState[v.state] = (byState[v.state] || 0) + 1;
    replace(
      vmBox,
      h("h2", {}, "VMs"),
      fields([
        ["defined", h("a", { href: "#/vms" }, String(vms.length))],
        ...Object.entries(byState).map(([s, n]) => [badge(s), String(n)]),
        ["HA-protected", String(vms.filter((v) => v.ha).length)],
      ]),
    );
    replace(
      hostBox,
      table(
        [
          { title: "Host", cell: (x) => h("span", {}, h("strong", {}, x.name), x.name !== x.id ? ` (${x.id})` : "") },
          {
            title: "Role",
            cell: (x) => badge(x.cluster_role === "leader" ? "leader" : x.cluster_role, x.cluster_role),
          },
          { title: "Health", cell: healthCell },
          { title: "Online", cell: (x) => (x.online ? badge("ok", "online") : badge("offline")) },
          { title: "CPUs", num: true, cell: (x) => String(x.cpus) },
          { title: "Memory", cell: (x) => `${mib(x.free_memory_mib)} free of ${mib(x.memory_mib)}` },
          { title: "Storage", cell: (x) => storageCell(storage[hosts.indexOf(x)]) },
          { title: "VMs", num: true, cell: (x) => String(x.vms) },
          { title: "Accel", cell: (x) => h("span", { title: x.accel_reason }, x.accel) },
          { title: "Cordoned", cell: (x) => yesno(x.cordoned) },
          { title: "Version", cell: (x) => x.version },
          { title: "Last seen", cell: (x) => time(x.last_seen) },
        ],
        hosts,
        { id: "hosts-table", key: (x) => x.id },
      ),
    );
    const ha = vms.filter((v) => v.ha);
    replace(
      haBox,
      table(
        [
          { title: "VM", cell: (v) => h("a", { href: `#/vms/${api.seg(v.name)}` }, v.name) },
          { title: "State", cell: (v) => badge(v.state) },
          { title: "Host", cell: (v) => v.host || "-" },
          { title: "HA", cell: haCell },
        ],
        ha,
        { id: "ha-table", key: (v) => v.name, empty: "no VM is HA-protected" },
      ),
    );
  });
}
