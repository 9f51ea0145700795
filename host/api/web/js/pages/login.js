// The login page: POST /api/v1/auth/login. The server sets the session
// cookie (HttpOnly, Secure, SameSite=Strict); the page keeps the answer's
// CSRF token in memory.

import * as api from "../api.js";
import { h, replace } from "../dom.js";

export const title = "Log in";

export async function render(ctx, loggedIn) {
  const user = h("input", { id: "login-user", name: "user", autocomplete: "username", required: true, autofocus: true });
  const password = h("input", {
    id: "login-password",
    name: "password",
    type: "password",
    autocomplete: "current-password",
    required: true,
  });
  const error = h("p", { id: "login-error", class: "error", hidden: true });
  const submit = h("button", { id: "login-submit", type: "submit", class: "primary" }, "Log in");
  const form = h(
    "form",
    { id: "login-form", class: "stack" },
    h("label", {}, "User", user),
    h("label", {}, "Password", password),
    error,
    submit,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    submit.disabled = true;
    try {
      const s = await api.post("/api/v1/auth/login", { user: user.value.trim(), password: password.value }, { quiet401: true });
      password.value = "";
      await loggedIn(s);
    } catch (e) {
      error.textContent =
        e.status === 401 ? "Wrong user name or password." : e.status === 429 ? `Too many failed logins: ${e.reason}` : e.message;
      error.hidden = false;
      submit.disabled = false;
    }
  });
  replace(
    ctx.main,
    h("div", { class: "login panel" }, h("h1", {}, "nasvisor"), h("p", { class: "muted" }, "Log in to manage this cluster."), form),
  );
  user.focus();
}
