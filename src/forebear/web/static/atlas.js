// The lineage atlas: the index's forest as SVG; wheel/drag/buttons pan and zoom,
// a click on a model shows its card, a click on an edge its evidence.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const RADIUS = 18;
const PALETTE = ["#2563eb", "#d97706", "#059669", "#7c3aed", "#db2777", "#0891b2", "#65a30d"];
const svg = document.getElementById("atlas");
const panel = document.getElementById("panel");
const view = { x: 0, y: 0, k: 1 };
let graph = null;
let layer = null;

function node(tag, attrs, parent) {
  const made = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) made.setAttribute(key, value);
  if (parent) parent.append(made);
  return made;
}

function el(tag, text, cls) {
  const made = document.createElement(tag);
  if (text !== undefined && text !== null) made.textContent = String(text);
  if (cls) made.className = cls;
  return made;
}

function pText(log10p) {
  if (log10p === null || log10p === undefined) return "—";
  if (log10p > -4) return "p = " + Math.pow(10, log10p).toPrecision(3);
  return "p < 1e" + Math.trunc(log10p) + " (log10 p = " + log10p.toFixed(1) + ")";
}

function apply() {
  layer.setAttribute("transform", `translate(${view.x},${view.y}) scale(${view.k})`);
}

function fit() {
  if (!graph || graph.nodes.length === 0) return;
  const xs = graph.nodes.map((n) => n.x), ys = graph.nodes.map((n) => n.y);
  const pad = 80, box = svg.getBoundingClientRect();
  const w = Math.max(...xs) - Math.min(...xs) + 2 * pad;
  const h = Math.max(...ys) - Math.min(...ys) + 2 * pad;
  view.k = Math.min(box.width / w, box.height / h, 2);
  view.x = (box.width - (Math.max(...xs) + Math.min(...xs)) * view.k) / 2;
  view.y = (box.height - (Math.max(...ys) + Math.min(...ys)) * view.k) / 2;
  apply();
}

function zoom(factor, cx, cy) {
  const box = svg.getBoundingClientRect();
  const px = cx === undefined ? box.width / 2 : cx, py = cy === undefined ? box.height / 2 : cy;
  const k = Math.min(8, Math.max(0.1, view.k * factor));
  view.x = px - ((px - view.x) * k) / view.k;
  view.y = py - ((py - view.y) * k) / view.k;
  view.k = k;
  apply();
}

function select(target) {
  for (const chosen of svg.querySelectorAll(".selected")) chosen.classList.remove("selected");
  if (target) target.classList.add("selected");
}

function row(list, name, value) {
  list.append(el("dt", name), el("dd", value === null || value === undefined || value === "" ? "—" : value));
}

function relatives(label, heading, which) {
  const found = graph.edges.filter((e) => e[which === "parent" ? "child" : "parent"] === label);
  if (found.length === 0) return [];
  const list = el("ul", null, "links");
  for (const edge of found) {
    const other = graph.nodes.find((n) => n.id === edge[which]);
    const link = el("a", other ? other.name : edge[which]);
    link.href = "#";
    link.addEventListener("click", (event) => { event.preventDefault(); showEdge(edge); });
    const item = el("li");
    item.append(link, el("span", " · " + edge.relation, "muted"));
    list.append(item);
  }
  return [el("h3", heading), list];
}

async function showNode(item) {
  select(svg.querySelector(`[data-node="${CSS.escape(item.id)}"]`));
  panel.replaceChildren(el("p", "loading…", "muted"));
  let record = null;
  try {
    const response = await fetch("/api/index/" + encodeURIComponent(item.id));
    if (response.ok) record = await response.json();
  } catch (error) { /* the atlas's copy of the record is shown instead */ }
  const data = record || item;
  const card = data.card || {};
  const shape = data.structure || {};
  const list = el("dl");
  row(list, "family", data.family);
  row(list, "shape", `hidden ${shape.hidden ?? "?"} × ${shape.layers ?? "?"} layers, vocab ${shape.vocab ?? "?"}`);
  row(list, "stored as", (shape.dtypes || []).join(", "));
  row(list, "card: base models", (card.base_models || []).join(", "));
  row(list, "card: licence", card.license);
  row(list, "card: from scratch", card.from_scratch ? "claimed" : "not claimed");
  if (record) row(list, "fingerprint", `v${record.fingerprint_version}, sha256 ${String(record.blob_sha256).slice(0, 16)}…`);
  if (record) row(list, "added", record.created);
  const parts = [el("h2", item.name), el("p", item.id, "muted small mono"), list];
  if (card.evidence) parts.push(el("blockquote", card.evidence));
  parts.push(...relatives(item.id, "parents", "parent"), ...relatives(item.id, "children", "child"));
  panel.replaceChildren(...parts);
  panel.dataset.showing = "node";
}

function showEdge(edge) {
  select(svg.querySelector(`[data-edge="${edge.id}"]`));
  const name = (label) => (graph.nodes.find((n) => n.id === label) || { name: label }).name;
  const list = el("dl");
  row(list, "relation", edge.relation);
  row(list, "evidence", pText(edge.log10_p));
  row(list, "distance", edge.distance === null ? null : edge.distance.toFixed(3));
  row(list, "P(direction), weights", edge.p_weights.toFixed(2));
  row(list, "P(direction), with priors", edge.p_priors === null ? null : edge.p_priors.toFixed(2));
  row(list, "decided by", edge.decided_by);
  if (edge.attached_by === "priors") row(list, "parent from", "the declared base (weights alike)");
  if (edge.weight !== null) row(list, "merge weight", edge.weight.toFixed(2));
  if (edge.alternatives.length) row(list, "also close", edge.alternatives.map(name).join(", "));
  const reasons = el("ul");
  for (const reason of edge.reasons) reasons.append(el("li", reason));
  panel.replaceChildren(el("h2", name(edge.parent) + " → " + name(edge.child)), list,
                        el("h3", "reasons"), reasons);
  panel.dataset.showing = "edge";
}

function draw() {
  svg.replaceChildren();
  const defs = node("defs", {}, svg);
  const marker = node("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5",
    markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" }, defs);
  node("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow" }, marker);
  layer = node("g", {}, svg);
  const at = Object.fromEntries(graph.nodes.map((n) => [n.id, n]));
  for (const edge of graph.edges) {
    const a = at[edge.parent], b = at[edge.child];
    const dx = b.x - a.x, dy = b.y - a.y, len = Math.hypot(dx, dy) || 1;
    const ends = { x1: a.x + (dx / len) * RADIUS, y1: a.y + (dy / len) * RADIUS,
                   x2: b.x - (dx / len) * (RADIUS + 3), y2: b.y - (dy / len) * (RADIUS + 3) };
    const group = node("g", { class: "edge " + (edge.decided_by === "undetermined" ? "undetermined" : "decided"),
                              "data-edge": edge.id, tabindex: "0" }, layer);
    node("line", { ...ends, class: "edge-line", "marker-end": "url(#arrow)" }, group);
    node("line", { ...ends, class: "edge-hit" }, group);
    node("title", {}, group).textContent = `${edge.relation} — ${pText(edge.log10_p)}`;
    group.addEventListener("click", () => showEdge(edge));
  }
  for (const item of graph.nodes) {
    const group = node("g", { class: "node", "data-node": item.id, tabindex: "0",
                              transform: `translate(${item.x},${item.y})` }, layer);
    node("circle", { r: RADIUS, fill: PALETTE[item.group % PALETTE.length] }, group);
    node("text", { y: RADIUS + 16, "text-anchor": "middle" }, group).textContent = item.name;
    node("title", {}, group).textContent = item.id;
    group.addEventListener("click", () => showNode(item));
  }
  fit();
}

function panAndZoom() {
  let drag = null;
  svg.addEventListener("wheel", (event) => {
    event.preventDefault();
    const box = svg.getBoundingClientRect();
    zoom(Math.exp(-event.deltaY * 0.0015), event.clientX - box.left, event.clientY - box.top);
  }, { passive: false });
  svg.addEventListener("pointerdown", (event) => {
    drag = { x: event.clientX, y: event.clientY, vx: view.x, vy: view.y };
  });
  window.addEventListener("pointermove", (event) => {
    if (!drag) return;
    view.x = drag.vx + event.clientX - drag.x;
    view.y = drag.vy + event.clientY - drag.y;
    svg.classList.add("panning");
    apply();
  });
  window.addEventListener("pointerup", () => { drag = null; svg.classList.remove("panning"); });
  document.getElementById("zoom-in").addEventListener("click", () => zoom(1.25));
  document.getElementById("zoom-out").addEventListener("click", () => zoom(0.8));
  document.getElementById("zoom-reset").addEventListener("click", fit);
}

async function load() {
  const summary = document.getElementById("atlas-summary");
  const response = await fetch("/api/atlas");
  const data = await response.json();
  if (!response.ok) {
    summary.textContent = "";
    panel.replaceChildren(el("p", data.error, "error"));
    return;
  }
  graph = data;
  summary.textContent = `${data.nodes.length} models · ${data.families} families · ${data.edges.length} edges`;
  svg.dataset.ready = "true";
  draw();
}

panAndZoom();
load();
