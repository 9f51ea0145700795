// The image library: the images and their import jobs, an upload from
// this computer with its progress, and an import from a URL.

import * as api from "../api.js";
import { session } from "../session.js";
import { badge, bytes, differ, field, flash, h, mib, progress, replace, select, showError, table, yesno } from "../dom.js";
import { confirmButton, perform } from "../actions.js";

export const title = "Images";

/** The image metadata fields, shared by both forms (`prefix` makes the ids). */
function metaFields(prefix) {
  const input = (name, attrs = {}) => h("input", { name, id: `${prefix}-${name.replaceAll("_", "-")}`, ...attrs });
  return [
    h(
      "div",
      { class: "row" },
      field("OS family", input("os_family", { placeholder: "linux" })),
      field("OS variant", input("os_variant", { placeholder: "e.g. debian12" })),
      field("Firmware", select({ name: "firmware", id: `${prefix}-firmware` }, [["bios", "BIOS"], ["uefi", "UEFI"]], "bios")),
    ),
    field("Ready marker", input("ready_marker", { placeholder: "a console line meaning installed and up" })),
    field("", input("cloud_init", { type: "checkbox", checked: true }), "the image runs cloud-init"),
  ];
}

function metaOf(v) {
  const m = { cloud_init: v.cloud_init, firmware: v.firmware };
  if (v.os_family) m.os_family = v.os_family;
  if (v.os_variant) m.os_variant = v.os_variant;
  if (v.ready_marker) m.ready_marker = v.ready_marker;
  return m;
}

function values(form) {
  const v = {};
  for (const el of form.elements) {
    if (el.name) v[el.name] = el.type === "checkbox" ? el.checked : el.type === "file" ? el.files[0] : el.value.trim();
  }
  return v;
}

/** An image name from a file name: its stem, in the API's name syntax. */
function nameOf(file) {
  return file.name
    .replace(/\.(qcow2|img|raw|vmdk|vdi|iso)$/i, "")
    .replace(/[^A-Za-z0-9._-]/g, "-")
    .replace(/^[^A-Za-z0-9]+/, "")
    .slice(0, 64);
}

function uploadForm(onDone) {
  const file = h("input", { type: "file", name: "file", id: "image-file", required: true });
  const name = h("input", { name: "name", id: "image-upload-name", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._-]{0,63}" });
  file.addEventListener("change", () => {
    if (file.files[0] && !name.value) name.value = nameOf(file.files[0]);
  });
  const bar = h("progress", { id: "image-upload-progress", max: 100, value: 0, hidden: true });
  const text = h("span", { id: "image-upload-status", class: "muted" });
  const submit = h("button", { type: "submit", class: "primary", id: "image-upload-submit" }, "Upload");
  const cancel = h("button", { type: "button", id: "image-upload-cancel", hidden: true }, "Cancel");
  const form = h(
    "form",
    { class: "stack", id: "image-upload-form" },
    field("File", file),
    field("Name", name),
    ...metaFields("upload"),
    h("div", { class: "toolbar" }, submit, cancel, bar, text),
  );
  let running = null;
  cancel.addEventListener("click", () => running && running.abort());
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const v = values(form);
    const started = Date.now();
    running = api.upload(`/api/v1/images/${api.seg(v.name)}/upload${api.query(metaOf(v))}`, v.file, (sent, total) => {
      const pct = total ? Math.floor((sent * 100) / total) : 0;
      bar.value = pct;
      const rate = sent / Math.max(0.001, (Date.now() - started) / 1000);
      text.textContent = `${pct}% · ${bytes(sent)} of ${bytes(total)} · ${bytes(rate)}/s`;
    });
    submit.disabled = true;
    cancel.hidden = false;
    bar.hidden = false;
    try {
      const job = await running.promise;
      bar.value = 100;
      text.textContent = `sent; the image is being checked (job ${job.id})`;
      flash(`Image ${v.name} uploaded; its import job is ${job.id}.`, "info");
      await onDone(true);
    } catch (e) {
      text.textContent = e.message;
      showError(e);
    }
    running = null;
    submit.disabled = false;
    cancel.hidden = true;
  });
  return form;
}

function urlForm(onDone) {
  const input = (name, attrs = {}) => h("input", { name, id: `image-url-${name.replaceAll("_", "-")}`, ...attrs });
  const submit = h("button", { type: "submit", class: "primary", id: "image-url-submit" }, "Import");
  const form = h(
    "form",
    { class: "stack", id: "image-url-form" },
    field("Name", input("name", { required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._-]{0,63}" })),
    field("URL", input("url", { type: "url", required: true, placeholder: "https://..." })),
    field("SHA-256", input("sha256", { placeholder: "64 hex digits; required for plain http" })),
    ...metaFields("url"),
    submit,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const v = values(form);
    const body = { name: v.name, url: v.url, ...metaOf(v) };
    if (v.sha256) body.sha256 = v.sha256;
    submit.disabled = true;
    await perform(async () => {
      const job = await api.post("/api/v1/images", body);
      form.reset();
      return `Import of ${v.name} started (job ${job.id}).`;
    }, onDone);
    submit.disabled = false;
  });
  return form;
}

export async function render(ctx) {
  const list = h("div", { id: "image-list" });
  const admin = session.can("admin");
  replace(
    ctx.main,
    h("h1", {}, "System images"),
    list,
    admin
      ? h(
          "div",
          { class: "row" },
          h("div", { class: "panel" }, h("h2", {}, "Upload an image"), uploadForm((force) => refresh(force))),
          h("div", { class: "panel" }, h("h2", {}, "Import from a URL"), urlForm((force) => refresh(force))),
        )
      : h("p", { class: "muted" }, "Adding and deleting images needs the admin role."),
  );
  const changed = differ();
  const refresh = async (force) => {
    const [images, jobs] = await Promise.all([
      api.get("/api/v1/images", { signal: ctx.signal }),
      api.get("/api/v1/jobs", { signal: ctx.signal }),
    ]);
    const jobOf = Object.fromEntries(jobs.map((j) => [j.id, j]));
    if (!changed([images, images.map((i) => jobOf[i.job] && jobOf[i.job].progress)]) && force !== true) return;
    images.sort((a, b) => a.name.localeCompare(b.name));
    replace(
      list,
      table(
        [
          { title: "Name", cell: (i) => h("strong", {}, i.name) },
          {
            title: "State",
            cell: (i) =>
              h(
                "span",
                {},
                badge(i.state),
                i.job && jobOf[i.job] ? [" ", progress(jobOf[i.job].progress)] : null,
                i.error ? h("div", { class: "error" }, i.error) : null,
              ),
          },
          { title: "Format", cell: (i) => (i.iso ? "iso (installer)" : i.format) },
          { title: "Size", num: true, cell: (i) => mib(i.size_mib) },
          { title: "Virtual size", num: true, cell: (i) => mib(i.virtual_size_mib) },
          { title: "OS", cell: (i) => `${i.os_family}${i.os_variant ? ` / ${i.os_variant}` : ""}` },
          { title: "cloud-init", cell: (i) => yesno(i.cloud_init) },
          { title: "Firmware", cell: (i) => i.firmware },
          { title: "Hosts", cell: (i) => i.hosts.join(", ") || "-" },
          {
            title: "",
            class: "actions",
            cell: (i) =>
              confirmButton({ data: { image: i.name } }, "Delete", "admin", async () => {
                await api.del(`/api/v1/images/${api.seg(i.name)}`);
                return `Image ${i.name} deleted.`;
              }, refresh),
          },
        ],
        images,
        { id: "images-table", key: (i) => i.name, empty: "no image" },
      ),
    );
  };
  await ctx.every(3000, refresh);
}
