// Users, API tokens and the audit log (admins): create, change role,
// disable, set a password, delete; create and revoke tokens; read who did
// what.

import * as api from "../api.js";
import { session, needs } from "../session.js";
import { badge, differ, field, h, replace, select, showError, table, time } from "../dom.js";
import { actionButton, confirmButton, perform } from "../actions.js";

export const title = "Users & tokens";

const ROLES = [
  ["viewer", "viewer: reads only"],
  ["operator", "operator: + power, consoles, migrations, jobs"],
  ["admin", "admin: everything"],
];

/**
 * The API tokens the caller may see (its own; an admin, everyone's), with
 * the forms to create one (its secret shown once) and to revoke one.
 */
export function tokenSection(ctx) {
  const list = h("div", { id: "token-list" });
  const secret = h("div", { id: "token-secret-box", hidden: true });
  const admin = session.can("admin");
  const form = h(
    "form",
    { class: "inline", id: "token-create-form" },
    field("Name", h("input", { name: "name", id: "token-name", required: true, placeholder: "e.g. backup-script" })),
    field("Role", select({ name: "role", id: "token-role" }, [["", "the user's"], ...ROLES.map(([r]) => [r, r])], "")),
    field("Expires in (days)", h("input", { name: "days", id: "token-days", type: "number", min: 1, placeholder: "never" })),
    admin ? field("For user", h("input", { name: "user", id: "token-user", placeholder: session.user })) : null,
    h("button", { type: "submit", class: "primary", id: "token-create-submit" }, "Create token"),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const e = form.elements;
    const body = { name: e.name.value.trim() };
    if (e.role.value) body.role = e.role.value;
    if (e.days.value) body.expires_in_s = Number(e.days.value) * 86400;
    if (e.user && e.user.value.trim()) body.user = e.user.value.trim();
    try {
      const t = await api.post("/api/v1/tokens", body);
      replace(
        secret,
        h(
          "div",
          { class: "panel" },
          h("strong", {}, `Token ${t.details.name} (${t.details.id}) for ${t.details.user}: `),
          "store it now, it is not shown again.",
          h("div", { class: "secret", id: "token-secret" }, t.token),
        ),
      );
      secret.hidden = false;
      form.reset();
      await refresh(true);
    } catch (err) {
      showError(err);
    }
  });
  const changed = differ();
  const refresh = async (force) => {
    const tokens = await api.get("/api/v1/tokens", { signal: ctx.signal });
    if (!changed(tokens) && force !== true) return;
    replace(
      list,
      table(
        [
          { title: "Id", cell: (t) => h("span", { class: "mono" }, t.id) },
          { title: "Name", cell: (t) => t.name },
          { title: "User", cell: (t) => t.user },
          { title: "Role", cell: (t) => t.role },
          { title: "Created", cell: (t) => `${time(t.created_at)} by ${t.created_by}` },
          { title: "Expires", cell: (t) => (t.expired ? badge("failed", "expired") : time(t.expires_at) === "-" ? "never" : time(t.expires_at)) },
          {
            title: "",
            class: "actions",
            cell: (t) =>
              confirmButton({ data: { revoke: t.id } }, "Revoke", "viewer", async () => {
                await api.del(`/api/v1/tokens/${api.seg(t.id)}`);
                return `Token ${t.name} revoked.`;
              }, refresh),
          },
        ],
        tokens,
        { id: "tokens-table", key: (t) => t.id, empty: "no API token" },
      ),
    );
  };
  return { el: [list, secret, h("div", { class: "panel" }, form)], refresh };
}

function usersSection(ctx) {
  const list = h("div", { id: "user-list" });
  const create = h(
    "form",
    { class: "inline", id: "user-create-form" },
    field("Name", h("input", { name: "name", id: "user-name", required: true })),
    field("Password", h("input", { name: "password", id: "user-password", type: "password", minlength: 8, required: true, autocomplete: "new-password" })),
    field("Role", select({ name: "role", id: "user-role" }, ROLES, "viewer")),
    h("button", { type: "submit", class: "primary", id: "user-create-submit" }, "Create user"),
  );
  create.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const e = create.elements;
    perform(async () => {
      const u = await api.post("/api/v1/users", { name: e.name.value.trim(), password: e.password.value, role: e.role.value });
      create.reset();
      return `User ${u.name} created (${u.role}).`;
    }, refresh);
  });
  const update = (name, body, what) =>
    perform(async () => {
      await api.patch(`/api/v1/users/${api.seg(name)}`, body);
      return `User ${name}: ${what}. Their sessions ended.`;
    }, refresh);
  const passwordForm = h(
    "form",
    { class: "inline", id: "user-password-form" },
    field("User", h("input", { name: "user", id: "user-password-user", required: true })),
    field("New password", h("input", { name: "password", id: "user-password-new", type: "password", minlength: 8, required: true, autocomplete: "new-password" })),
    h("button", { type: "submit", id: "user-password-submit" }, "Set password"),
  );
  passwordForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const e = passwordForm.elements;
    await update(e.user.value.trim(), { password: e.password.value }, "new password set");
    passwordForm.reset();
  });
  const changed = differ();
  const refresh = async (force) => {
    const users = await api.get("/api/v1/users", { signal: ctx.signal });
    if (!changed(users) && force !== true) return;
    replace(
      list,
      table(
        [
          { title: "User", cell: (u) => h("strong", {}, u.name) },
          {
            title: "Role",
            cell: (u) => {
              const sel = select({ data: { userRole: u.name } }, ROLES.map(([r]) => [r, r]), u.role);
              sel.addEventListener("change", () => update(u.name, { role: sel.value }, `role ${sel.value}`));
              return sel;
            },
          },
          { title: "State", cell: (u) => (u.disabled ? badge("failed", "disabled") : badge("ok", "enabled")) },
          { title: "Password", cell: (u) => (u.password_set ? `set ${time(u.password_changed_at)}` : "none (token only)") },
          { title: "Created", cell: (u) => time(u.created_at) },
          {
            title: "",
            class: "actions",
            cell: (u) => {
              const toggle = actionButton({ data: { toggleUser: u.name } }, u.disabled ? "Enable" : "Disable", "admin", async () => {
                await api.patch(`/api/v1/users/${api.seg(u.name)}`, { disabled: !u.disabled });
                return `User ${u.name} ${u.disabled ? "enabled" : "disabled"}.`;
              }, refresh);
              const remove = confirmButton({ data: { deleteUser: u.name } }, "Delete", "admin", async () => {
                await api.del(`/api/v1/users/${api.seg(u.name)}`);
                return `User ${u.name} deleted, with their tokens.`;
              }, refresh);
              return [toggle, " ", remove];
            },
          },
        ],
        users,
        { id: "users-table", key: (u) => u.name },
      ),
    );
  };
  return { el: [list, h("div", { class: "row" }, h("div", { class: "panel" }, create), h("div", { class: "panel" }, passwordForm))], refresh };
}

function auditSection(ctx) {
  const list = h("div", { id: "audit-list" });
  let entries = [];
  let since = null;
  const refresh = async () => {
    const fresh = await api.get(`/api/v1/audit${api.query({ since, limit: since === null ? 100 : 1000 })}`, { signal: ctx.signal });
    if (since !== null && !fresh.length) return;
    entries = entries.concat(fresh).slice(-200);
    since = entries.length ? entries[entries.length - 1].seq : 0;
    replace(
      list,
      table(
        [
          { title: "#", num: true, cell: (a) => String(a.seq) },
          { title: "Time", cell: (a) => time(a.time) },
          { title: "User", cell: (a) => `${a.user}${a.role ? ` (${a.role})` : ""}` },
          { title: "From", cell: (a) => `${a.address} via ${a.host}` },
          { title: "Operation", cell: (a) => h("span", { title: a.request }, a.operation) },
          { title: "Status", cell: (a) => badge(a.status < 400 ? "ok" : "failed", String(a.status)) },
          { title: "Result", cell: (a) => a.result },
        ],
        entries.slice().reverse(),
        { id: "audit-table", key: (a) => String(a.seq), empty: "nothing audited yet" },
      ),
    );
  };
  return { el: list, refresh };
}

export async function render(ctx) {
  if (!session.can("admin")) {
    replace(ctx.main, h("h1", {}, title), h("p", { class: "error" }, `Managing users and tokens ${needs("admin")}.`));
    return;
  }
  const users = usersSection(ctx);
  const tokens = tokenSection(ctx);
  const audit = auditSection(ctx);
  replace(
    ctx.main,
    h("h1", {}, "Users & tokens"),
    h("h2", {}, "Users"),
    users.el,
    h("h2", {}, "API tokens"),
    tokens.el,
    h("h2", {}, "Audit log"),
    h("p", { class: "muted" }, "Every change asked of the API and every login, newest first."),
    audit.el,
  );
  await ctx.every(5000, () => Promise.all([users.refresh(), tokens.refresh(), audit.refresh()]));
}
