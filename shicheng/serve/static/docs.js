// The API reference, drawn from /openapi.json on this server: no CDN, so it works offline.
// Text from the description is set with textContent only.
"use strict";

const el = (tag, text, className) => {
  const node = document.createElement(tag);
  if (text != null) node.textContent = text;
  if (className) node.className = className;
  return node;
};

function ref(spec, schema) {
  let s = schema || {};
  while (s.$ref) s = s.$ref.split("/").slice(1).reduce((o, k) => o[k], spec);
  return s;
}

function typeOf(spec, schema) {
  const s = ref(spec, schema);
  if (schema && schema.$ref) return schema.$ref.split("/").pop();
  if (s.anyOf) return s.anyOf.map((x) => typeOf(spec, x)).join(" | ");
  if (s.enum) return s.enum.map((x) => JSON.stringify(x)).join(" | ");
  if (s.type === "array") return `${typeOf(spec, s.items)}[]`;
  return s.type || "object";
}

function fieldsTable(spec, schema) {
  const s = ref(spec, schema);
  const props = s.properties || {};
  if (!Object.keys(props).length) return el("p", typeOf(spec, schema), "meta");
  const required = new Set(s.required || []);
  const table = el("table");
  const head = el("tr");
  for (const h of ["field", "type", "default", "description"]) head.appendChild(el("th", h));
  table.appendChild(head);
  for (const [name, p] of Object.entries(props)) {
    const row = el("tr");
    row.append(el("td", name + (required.has(name) ? " *" : "")), el("td", typeOf(spec, p)),
      el("td", p.default === undefined ? "" : JSON.stringify(p.default)), el("td", p.description || ""));
    table.appendChild(row);
  }
  return table;
}

async function draw() {
  const spec = await (await fetch("/openapi.json")).json();
  const schemes = (spec.components && spec.components.securitySchemes) || {};
  const auth = document.getElementById("auth");
  auth.appendChild(el("h2", "Authentication"));
  for (const [name, s] of Object.entries(schemes)) {
    auth.appendChild(el("p", `${name}: ${s.type} ${s.scheme || ""} — send 'Authorization: Bearer <key>' ` +
      `when the server was started with --api-key-env. ${s.description || ""}`));
  }
  const ops = document.getElementById("operations");
  ops.replaceChildren();
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const box = el("section", null, "panel operation");
      box.dataset.path = path;
      box.appendChild(el("h2", `${method.toUpperCase()} ${path}`));
      if (op.summary) box.appendChild(el("p", op.summary));
      if (op.description) box.appendChild(el("p", op.description, "meta"));
      if (op.security) box.appendChild(el("p", "needs the API key when the server has one", "warn"));
      const body = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
      if (body) {
        box.appendChild(el("h3", "Request body (Content-Type: application/json)"));
        box.appendChild(fieldsTable(spec, body.schema));
      }
      box.appendChild(el("p", `Responses: ${Object.keys(op.responses || {}).join(", ")}`, "meta"));
      ops.appendChild(box);
    }
  }
}

draw().catch((e) => {
  document.getElementById("operations").replaceChildren(el("p", `could not load /openapi.json: ${e.message}`,
    "form-error"));
});
