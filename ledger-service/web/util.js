// DOM and formatting helpers. Pages build their DOM with el(), never from HTML strings, so no
// value from the service is ever parsed as markup.

/** Creates an element: el("td", {class: "x", onclick: f}, "text", childNode, ...). */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/** Replaces the main area's content and moves focus to its heading (for screen readers). */
export function show(...children) {
  const main = document.getElementById("main");
  main.replaceChildren(...children.flat());
  const h = main.querySelector("h1");
  if (h) { h.setAttribute("tabindex", "-1"); h.focus({ preventScroll: true }); }
}

/** Announces a change to assistive technology without moving focus. */
export function announce(text) {
  const s = document.getElementById("status");
  if (s) s.textContent = text;
}

export function fmtTime(ms) {
  if (ms === null || ms === undefined) return "—";
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function fmtAge(ms) {
  if (ms === null || ms === undefined) return "—";
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function fmtValue(v) {
  if (typeof v !== "number") return String(v);
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

/** Short names of the vital signs by LOINC, for column headings. */
export const SHORT = {
  "8867-4": "HR", "2708-6": "SpO₂", "9279-1": "RR", "8480-6": "SBP", "8462-4": "DBP", "8310-5": "Temp",
  news2: "NEWS2",
};

/** UCUM units as people write them. */
export function unitText(u) {
  return { Cel: "°C", "mm[Hg]": "mmHg", "{score}": "" }[u] ?? u;
}

/** An alert level as a badge: always a word and a symbol, never colour alone. */
export function levelBadge(level) {
  const text = { emergency: "EMERGENCY", urgent: "URGENT", none: "no alert" }[level] || level;
  const sym = { emergency: "▲▲", urgent: "▲", none: "" }[level] || "";
  return el("span", { class: `badge level-${level}` }, sym ? el("span", { "aria-hidden": "true" }, sym + " ") : null, text);
}

export function severityLevel(sev) { return sev >= 3 ? "emergency" : sev >= 1 ? "urgent" : "none"; }
