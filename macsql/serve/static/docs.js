// The API docs of `macsql serve`, drawn from /openapi.json with this server's own files (no CDN: it works
// offline). As on the page, every string is put on the page with textContent.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function resolve(spec, schema) {
  const ref = schema && schema.$ref;
  return ref ? spec.components.schemas[ref.split("/").pop()] : schema || {};
}

function typeOf(spec, schema) {
  schema = resolve(spec, schema);
  if (schema.anyOf) return schema.anyOf.map((s) => typeOf(spec, s)).join(" | ");
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  return schema.type || "object";
}

function fieldList(spec, schema) {
  schema = resolve(spec, schema);
  const required = new Set(schema.required || []);
  const list = el("ul");
  for (const [name, prop] of Object.entries(schema.properties || {})) {
    const item = el("li");
    item.append(el("code", name + (required.has(name) ? "" : "?") + ": " + typeOf(spec, prop)));
    const about = prop.description || resolve(spec, prop).description;
    if (about) item.append(el("span", about, "muted"));
    list.append(item);
  }
  return list;
}

function render(spec) {
  $("intro").textContent = [spec.info.title, spec.info.summary, spec.info.description].filter(Boolean).join(" — ");
  const box = $("endpoints");
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const section = el("section", null, "endpoint");
      const head = el("h2");
      head.append(el("span", method.toUpperCase(), "method"), el("span", path));
      section.append(head);
      if (op.summary) section.append(el("p", op.summary));
      if (op.description) section.append(el("p", op.description, "muted"));
      const params = op.parameters || [];
      if (params.length) {
        section.append(el("h3", "Query"));
        const list = el("ul");
        for (const p of params) list.append(el("li", p.name + (p.required ? "" : "?") + ": " + typeOf(spec, p.schema)));
        section.append(list);
      }
      const body = op.requestBody && op.requestBody.content["application/json"];
      if (body) section.append(el("h3", "JSON body"), fieldList(spec, body.schema));
      const codes = el("ul");
      for (const [code, r] of Object.entries(op.responses || {})) codes.append(el("li", code + ": " + (r.description || "")));
      section.append(el("h3", "Replies"), codes);
      box.append(section);
    }
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  const token = sessionStorage.getItem("macsql-token");
  try {
    const response = await fetch("/openapi.json", {headers: token ? {Authorization: "Bearer " + token} : {}});
    if (!response.ok) throw new Error(response.status + " " + response.statusText);
    render(await response.json());
  } catch (err) {
    $("error").textContent = "Cannot read /openapi.json: " + err.message;
    $("error").hidden = false;
  }
});
