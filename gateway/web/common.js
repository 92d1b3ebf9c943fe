// common.js: helpers shared by the dashboard and the API reference.
"use strict";

// el builds an element; text is always set with textContent, never HTML.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// api calls the gateway; a 401 shows the sign-in form.
async function api(path, opts) {
  const resp = await fetch(path, Object.assign({ credentials: "same-origin" }, opts || {}));
  if (resp.status === 401) {
    const login = document.getElementById("login");
    if (login) login.hidden = false;
  }
  const text = await resp.text();
  let body = text;
  try { body = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
  return { status: resp.status, ok: resp.ok, headers: resp.headers, body };
}

function setupLogin(onLogin) {
  const login = document.getElementById("login");
  if (!login) return;
  login.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = document.getElementById("token").value.trim();
    document.cookie = "pnp_token=" + encodeURIComponent(t) + "; path=/; SameSite=Strict" + (location.protocol === "https:" ? "; Secure" : "");
    login.hidden = true;
    onLogin();
  });
}

// fieldValue turns an input's text into the JSON value its schema type
// asks for; text that is not of that type is sent as typed, so the
// runner names the violation.
function fieldValue(type, raw, checked) {
  if (type === "boolean") return checked;
  if (raw === "") return undefined;
  if (type === "string") return raw;
  try { return JSON.parse(raw); } catch (_) { return raw; }
}

// uploader is a file picker for a URL field: the chosen file goes to the
// uploads bucket (POST /v1/objects) and its obj:// reference fills the
// field, which the runner then reads through NATS.
function uploader(input, violation) {
  const file = el("input", { type: "file", class: "upload", "aria-label": "upload a file" });
  const note = el("span", { class: "muted small", "data-role": "upload" });
  file.addEventListener("change", async () => {
    const f = file.files[0];
    if (!f) return;
    violation.textContent = "";
    note.textContent = "uploading " + f.name + "…";
    const r = await api("/v1/objects?filename=" + encodeURIComponent(f.name), {
      method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: f,
    });
    if (!r.ok) {
      note.textContent = "";
      violation.textContent = (r.body && r.body.message) || ("upload failed: " + r.status);
      return;
    }
    note.textContent = f.name + " uploaded (" + r.body.size + " bytes)";
    input.value = r.body.ref;
    input.dispatchEvent(new Event("input"));
  });
  return el("div", { class: "small" }, "or upload: ", file, " ", note);
}

// schemaForm renders a form for an object schema: one field per property
// and the raw JSON body it sends, which may also be edited directly.
// send(body) returns the api() response; violations are shown next to
// the field their JSON pointer names.
function schemaForm(name, schema, send) {
  schema = schema || {};
  const props = schema.properties || {};
  const required = new Set(schema.required || []);
  const fields = {};
  const raw = el("textarea", { class: "raw", rows: 3, spellcheck: "false", "data-role": "body", "aria-label": "JSON body" });
  const out = el("pre", { class: "reply", "data-role": "reply" });
  const status = el("span", { class: "status", "data-role": "status" });
  const sync = () => {
    const body = {};
    for (const [k, f] of Object.entries(fields)) {
      const v = fieldValue(f.type, f.input.value, f.input.checked);
      if (v !== undefined) body[k] = v;
    }
    raw.value = JSON.stringify(body);
  };
  const rows = Object.entries(props).map(([k, p]) => {
    const type = Array.isArray(p.type) ? p.type[0] : p.type;
    let input;
    if (type === "boolean") input = el("input", { type: "checkbox", name: k });
    else if (type === "string" && (p.maxLength || 1000) > 200) input = el("textarea", { name: k, rows: 2 });
    else input = el("input", { type: "text", name: k, placeholder: type || "JSON" });
    if (p.default !== undefined && type !== "boolean") input.value = typeof p.default === "string" ? p.default : JSON.stringify(p.default);
    input.addEventListener("input", sync);
    input.addEventListener("change", sync);
    const violation = el("span", { class: "violation", "data-pointer": "/" + k });
    fields[k] = { type, input, violation };
    return el("div", { class: "field", "data-field": k },
      el("label", {}, el("code", {}, k), required.has(k) ? el("span", { class: "req" }, "*") : null, " ", el("span", { class: "muted small" }, type || "")),
      input, type === "string" && p.format === "uri" ? uploader(input, violation) : null, violation,
      p.description ? el("div", { class: "muted small" }, p.description) : null);
  });
  const whole = el("span", { class: "violation", "data-pointer": "" });
  const form = el("form", { class: "tryit", "data-algorithm": name },
    rows,
    el("label", { class: "small muted" }, "body sent"), raw, whole,
    el("div", {}, el("button", { type: "submit" }, "Run"), " ", status),
    out);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const f of Object.values(fields)) f.violation.textContent = "";
    whole.textContent = "";
    status.textContent = "…";
    out.textContent = "";
    const r = await send(raw.value);
    status.textContent = String(r.status);
    status.className = "status " + (r.ok ? "good" : "bad");
    out.textContent = typeof r.body === "string" ? r.body : JSON.stringify(r.body, null, 2);
    if (!r.ok && r.body && Array.isArray(r.body.violations)) {
      for (const v of r.body.violations) {
        const key = (v.pointer || "").split("/")[1];
        const target = key !== undefined && fields[key] ? fields[key].violation : whole;
        target.textContent = (target.textContent ? target.textContent + "; " : "") + v.message;
      }
    }
  });
  sync();
  return form;
}
