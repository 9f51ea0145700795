// The caller's own account: who it is, its password, its API tokens.

import * as api from "../api.js";
import { session } from "../session.js";
import { fields, flash, h, replace, showError, time } from "../dom.js";
import { tokenSection } from "./access.js";

export const title = "Account";

const MAY = {
  viewer: "read everything (VMs, hosts, storage, images, jobs, events, plugins)",
  operator: "read everything; power VMs on and off, use their consoles, migrate them, cancel jobs",
  admin: "everything: VMs' definitions, storage, images, vswitches, hosts, the cluster, plugins, users and tokens",
};

export async function render(ctx) {
  const me = await api.get("/api/v1/auth/whoami", { signal: ctx.signal });
  const form = h(
    "form",
    { class: "stack", id: "password-form" },
    h("label", {}, "Present password", h("input", { name: "current", id: "password-current", type: "password", required: true, autocomplete: "current-password" })),
    h("label", {}, "New password", h("input", { name: "new", id: "password-new", type: "password", minlength: 8, required: true, autocomplete: "new-password" })),
    h("label", {}, "New password again", h("input", { name: "again", id: "password-again", type: "password", minlength: 8, required: true, autocomplete: "new-password" })),
    h("button", { type: "submit", class: "primary", id: "password-submit" }, "Change password"),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const e = form.elements;
    if (e.new.value !== e.again.value) {
      showError(new Error("new: the two new passwords differ"));
      return;
    }
    try {
      await api.post("/api/v1/auth/password", { current: e.current.value, new: e.new.value });
      flash("Password changed; your other sessions ended.", "info");
      form.reset();
    } catch (err) {
      showError(err);
    }
  });
  const tokens = tokenSection(ctx);
  replace(
    ctx.main,
    h("h1", {}, `Account: ${me.user}`),
    h(
      "div",
      { class: "row" },
      h(
        "div",
        { class: "panel" },
        fields([
          ["user", me.user],
          ["role", me.role],
          ["may", MAY[me.role] || "-"],
          ["logged in by", me.via],
          ["session", h("span", { class: "mono" }, me.credential)],
          ["ends at the latest", time(me.expires_at)],
        ]),
      ),
      h("div", { class: "panel" }, h("h2", {}, "Password"), form),
    ),
    h("h2", {}, session.can("admin") ? "API tokens (everyone's)" : "Your API tokens"),
    tokens.el,
  );
  await ctx.every(5000, tokens.refresh);
}
