// Who is logged in: the answer of whoami (user, role, and the session's
// CSRF token, which every change must carry in X-CSRF-Token). Kept in
// memory only: after a reload the page asks whoami again (the session
// cookie is HttpOnly, the page never sees it).

const RANK = { viewer: 1, operator: 2, admin: 3 };

export const session = {
  user: null,
  role: null,
  csrf: null,
  via: null,
  expiresAt: null,

  /** Takes whoami's (or the login's) answer. */
  set(me) {
    this.user = me.user;
    this.role = me.role;
    this.csrf = me.csrf_token || null;
    this.via = me.via || "session";
    this.expiresAt = me.expires_at || null;
    document.body.dataset.role = this.role;
  },

  clear() {
    this.user = this.role = this.csrf = this.via = this.expiresAt = null;
    delete document.body.dataset.role;
  },

  /** Whether the caller's role reaches `role`. */
  can(role) {
    return !!this.role && RANK[this.role] >= RANK[role];
  },
};

/** The reason shown on a control the role may not use. */
export function needs(role) {
  return `needs the ${role} role (you are ${session.role || "not logged in"})`;
}

/**
 * Disables `el` unless the caller's role reaches `role`; the server refuses
 * the call anyway (403), this only spares the click.
 */
export function gate(el, role) {
  if (!session.can(role)) {
    el.disabled = true;
    el.title = needs(role);
    el.dataset.needsRole = role;
  }
  return el;
}
