// docs.js: renders the gateway's OpenAPI document, generated from the
// live algorithms, with a try-it form for each algorithm's run operation.
"use strict";

function resolve(doc, s) {
  if (s && s.$ref && s.$ref.startsWith("#/components/schemas/")) return doc.components.schemas[s.$ref.slice(21)];
  return s;
}

async function render() {
  const r = await api("/openapi.json");
  if (!r.ok) return;
  const doc = r.body;
  document.getElementById("intro").replaceChildren(
    el("h2", {}, doc.info.title, " ", el("span", { class: "muted small" }, "OpenAPI " + doc.openapi)),
    el("p", {}, doc.info.description));
  const ops = [];
  for (const [path, item] of Object.entries(doc.paths).sort()) {
    for (const [method, op] of Object.entries(item)) {
      const body = op.requestBody && op.requestBody.content["application/json"];
      const ok = Object.entries(op.responses || {}).map(([code, resp]) => el("li", {}, el("code", {}, code), " ", resp.description || ""));
      const params = (op.parameters || []).map((p) => el("li", {}, el("code", {}, p.name), " (" + p.in + ") ", p.description || ""));
      let tryit = null;
      if (method === "post" && path.endsWith("/run") && body) {
        const name = path.split("/")[3];
        tryit = schemaForm(name, resolve(doc, body.schema), (b) => api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: b }));
      }
      ops.push(el("div", { class: "op", id: op.operationId },
        el("div", {}, el("span", { class: "method" }, method.toUpperCase()), el("code", {}, path), " ", el("span", { class: "muted" }, op.summary || "")),
        params.length ? el("ul", { class: "small" }, params) : null,
        body ? el("details", {}, el("summary", { class: "small" }, "request body schema"), el("pre", { class: "schema" }, JSON.stringify(resolve(doc, body.schema), null, 2))) : null,
        el("ul", { class: "small" }, ok),
        tryit));
    }
  }
  document.getElementById("ops").replaceChildren(el("h2", {}, "Operations"), ...ops);
}

setupLogin(render);
render();
