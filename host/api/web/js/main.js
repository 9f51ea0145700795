// The console's entry point: session bootstrap (whoami), the hash router,
// the navigation bar, and each page's lifetime (its polls and streams end
// when the page is left).

import * as api from "./api.js";
import { session } from "./session.js";
import { clearFlash, flashNext, replace, showError } from "./dom.js";
import * as login from "./pages/login.js";
import * as overview from "./pages/overview.js";
import * as vms from "./pages/vms.js";
import * as vmCreate from "./pages/vm_create.js";
import * as vm from "./pages/vm.js";
import * as images from "./pages/images.js";
import * as storage from "./pages/storage.js";
import * as vswitches from "./pages/vswitches.js";
import * as plugins from "./pages/plugins.js";
import * as jobs from "./pages/jobs.js";
import * as events from "./pages/events.js";
import * as access from "./pages/access.js";
import * as account from "./pages/account.js";

/** Hash routes: pattern, page module, the nav entry it belongs to. */
const ROUTES = [
  [/^\/overview$/, overview, "overview"],
  [/^\/vms$/, vms, "vms"],
  [/^\/vms\/new$/, vmCreate, "vms"],
  [/^\/vms\/([^/]+)$/, vm, "vms"],
  [/^\/images$/, images, "images"],
  [/^\/storage$/, storage, "storage"],
  [/^\/storage\/([^/]+)$/, storage, "storage"],
  [/^\/vswitches$/, vswitches, "vswitches"],
  [/^\/plugins$/, plugins, "plugins"],
  [/^\/jobs$/, jobs, "jobs"],
  [/^\/events$/, events, "events"],
  [/^\/access$/, access, "access"],
  [/^\/account$/, account, "account"],
];

// A violation of the Content-Security-Policy is a bug of the console:
// count it where a test can see it, and say it in the browser's log.
document.addEventListener("securitypolicyviolation", (e) => {
  document.body.dataset.cspViolations = String(Number(document.body.dataset.cspViolations || 0) + 1);
  console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`);
});

const main = document.getElementById("main");
let current = null;

/** What a page gets: where to draw, and helpers that end with the page. */
function newContext() {
  const controller = new AbortController();
  const cleanups = [];
  const ctx = {
    main,
    signal: controller.signal,
    alive: () => !controller.signal.aborted,
    /** Runs `fn` now and then every `ms` after it finished, until the page is left. */
    every(ms, fn) {
      const run = async () => {
        if (!ctx.alive()) return;
        try {
          await fn();
        } catch (e) {
          if (e.name !== "AbortError" && ctx.alive()) showError(e);
        }
        if (ctx.alive()) {
          const t = setTimeout(run, ms);
          cleanups.push(() => clearTimeout(t));
        }
      };
      return run();
    },
    onLeave(fn) {
      cleanups.push(fn);
    },
    leave() {
      controller.abort();
      for (const f of cleanups.splice(0)) f();
    },
  };
  return ctx;
}

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/overview";
  const [path, qs] = raw.split("?");
  return { path, params: new URLSearchParams(qs || "") };
}

function showChrome() {
  const bar = document.getElementById("topbar");
  bar.hidden = !session.user;
  if (!session.user) return;
  document.getElementById("whoami").textContent = `${session.user} (${session.role})`;
  for (const a of document.querySelectorAll("#nav a[data-min-role]")) {
    a.hidden = !session.can(a.dataset.minRole);
  }
}

function markNav(name) {
  for (const a of document.querySelectorAll("#topbar a[data-page]")) {
    a.classList.toggle("active", a.dataset.page === name);
  }
}

async function route() {
  if (current) current.leave();
  const ctx = newContext();
  current = ctx;
  clearFlash();
  showChrome();
  replace(main);
  if (!session.user) {
    document.title = "Log in · nasvisor";
    await login.render(ctx, loggedIn);
    return;
  }
  const { path, params } = parseHash();
  const found = ROUTES.map(([re, page, nav]) => [path.match(re), page, nav]).find(([m]) => m);
  if (!found) {
    location.hash = "#/overview";
    return;
  }
  const [m, page, nav] = found;
  markNav(nav);
  document.title = `${page.title} · nasvisor`;
  try {
    await page.render(ctx, ...m.slice(1).map(decodeURIComponent), params);
  } catch (e) {
    if (e.name !== "AbortError" && ctx.alive()) showError(e);
  }
}

/** After a login: whoami (for the credential's details), then the page asked for. */
async function loggedIn(sessionView) {
  session.set(sessionView);
  try {
    session.set(await api.get("/api/v1/auth/whoami"));
  } catch (e) {
    showError(e);
  }
  if (!session.csrf) session.csrf = sessionView.csrf_token;
  route();
}

async function logout() {
  try {
    await api.post("/api/v1/auth/logout", undefined, { quiet401: true });
  } catch (e) {
    if (e.status !== 401) showError(e);
  }
  session.clear();
  flashNext("You are logged out.", "info");
  route();
}

api.setUnauthorizedHandler(() => {
  if (!session.user) return;
  session.clear();
  flashNext("Your session has ended: log in again.", "error");
  route();
});

async function boot() {
  document.getElementById("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  try {
    session.set(await api.get("/api/v1/auth/whoami", { quiet401: true }));
  } catch (e) {
    session.clear();
    if (e.status !== 401) flashNext(e.message, "error");
  }
  route();
}

boot();
