// The page's one way to the server: the /api/v1 routes, with the session
// cookie (sent by the browser, same origin) and, on every change, the
// session's CSRF token. Errors come back as ApiError, whose message says
// the status, the field and the reason the server gave.

import { session } from "./session.js";

export class ApiError extends Error {
  constructor(status, field, reason) {
    const where = field ? `${field}: ` : "";
    super(status ? `HTTP ${status}: ${where}${reason}` : `${where}${reason}`);
    this.status = status;
    this.field = field;
    this.reason = reason;
  }
}

let onUnauthorized = () => {};

/** What to do when a call answers 401 (the session ended). */
export function setUnauthorizedHandler(f) {
  onUnauthorized = f;
}

/** Reads an error answer `{"error": {"field", "reason"}}`. */
function errorOf(status, text, statusText) {
  try {
    const e = JSON.parse(text).error;
    if (e && e.reason) return new ApiError(status, e.field || null, e.reason);
  } catch (_) {
    // not JSON: fall through
  }
  return new ApiError(status, null, text || statusText || "request failed");
}

function headers(method, json) {
  const h = { Accept: "application/json" };
  if (json) h["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD" && session.csrf) h["X-CSRF-Token"] = session.csrf;
  return h;
}

/**
 * `method path` with an optional JSON body; the answer's JSON (null for
 * 204). Throws ApiError. `opts.signal` aborts; `opts.quiet401` skips the
 * session-ended handler.
 */
export async function call(method, path, body, opts = {}) {
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers: headers(method, body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
      signal: opts.signal,
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, null, `the server cannot be reached (${e.message})`);
  }
  const text = await resp.text();
  if (!resp.ok) {
    const err = errorOf(resp.status, text, resp.statusText);
    if (resp.status === 401 && !opts.quiet401) onUnauthorized(err);
    throw err;
  }
  if (!text) return null;
  return JSON.parse(text);
}

export const get = (path, opts) => call("GET", path, undefined, opts);
export const post = (path, body, opts) => call("POST", path, body, opts);
export const patch = (path, body, opts) => call("PATCH", path, body, opts);
export const del = (path, opts) => call("DELETE", path, undefined, opts);

/** A path segment, escaped. */
export const seg = (s) => encodeURIComponent(s);

/** A query string from an object (empty values left out). */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

/**
 * Follows a VM's serial console (`GET /api/v1/vms/{id}/console`, a
 * streamed octet body): `onText` gets the decoded text as it arrives.
 * Resolves when the stream ends (the VM stopped, or `signal` aborted).
 */
export async function followConsole(vm, tail, signal, onText) {
  const resp = await fetch(`/api/v1/vms/${seg(vm)}/console${query({ follow: true, tail })}`, {
    credentials: "same-origin",
    cache: "no-store",
    signal,
  });
  if (!resp.ok) {
    const err = errorOf(resp.status, await resp.text(), resp.statusText);
    if (resp.status === 401) onUnauthorized(err);
    throw err;
  }
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    onText(decoder.decode(value, { stream: true }));
  }
  onText(decoder.decode());
}

/**
 * Uploads `file` as the raw body of `POST path` (the image upload route),
 * reporting `onProgress(sent, total)`. Returns `{promise, abort}`; the
 * promise resolves to the answer's JSON or rejects with ApiError.
 */
export function upload(path, file, onProgress) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open("POST", path);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.setRequestHeader("Accept", "application/json");
    if (session.csrf) xhr.setRequestHeader("X-CSRF-Token", session.csrf);
    xhr.upload.addEventListener("progress", (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size));
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve(xhr.responseText ? JSON.parse(xhr.responseText) : null);
      } else {
        const err = errorOf(xhr.status, xhr.responseText, xhr.statusText);
        if (xhr.status === 401) onUnauthorized(err);
        reject(err);
      }
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, null, "the upload failed: connection lost")));
    xhr.addEventListener("abort", () => reject(new ApiError(0, null, "the upload was cancelled")));
    xhr.send(file);
  });
  return { promise, abort: () => xhr.abort() };
}
