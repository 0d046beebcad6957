// A patient's charts: one time series per vital sign over a chosen range (last hour, 24 h,
// 7 days, custom; drag across a chart to zoom in), the NEWS2 bands shaded behind the line and
// labelled with their sub-score, alert openings and resolutions marked, gaps where no reading
// arrived left as gaps. The service decimates a long range into time buckets (mean, min, max);
// uPlot (vendored) draws them.

import { api } from "./api.js";
import { el, show, fmtTime, fmtValue, levelBadge, severityLevel, SHORT, unitText } from "./util.js";

const RANGES = [
  { id: "1h", label: "Last hour", ms: 3600e3 },
  { id: "24h", label: "Last 24 h", ms: 86400e3 },
  { id: "7d", label: "Last 7 days", ms: 7 * 86400e3 },
];
const BAND_FILL = { 1: "rgba(255, 213, 79, 0.22)", 2: "rgba(255, 152, 0, 0.22)", 3: "rgba(229, 57, 53, 0.20)" };
const REFRESH_MS = 15000;
/** The y range each chart shows at least (clinically useful, so the NEWS2 bands show). */
const Y_RANGE = { "8310-5": [34, 41], "8867-4": [30, 150], "2708-6": [85, 100], "9279-1": [4, 30], "8480-6": [80, 230], "8462-4": [40, 120] };
let plots = [];
let timer = null;
let generation = 0;

/** Charts follow the window's width (a tablet turned, a window resized). */
window.addEventListener("resize", () => {
  for (const p of plots) {
    const host = p.root.parentElement;
    if (host && host.clientWidth) p.setSize({ width: host.clientWidth, height: 220 });
  }
});

export function stopPatient() {
  generation++;
  if (timer) clearTimeout(timer);
  timer = null;
  for (const p of plots) p.destroy();
  plots = [];
}

function toLocalInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}

export async function patientPage([patient, rangeArg], _me) {
  if (!patient) throw new Error("no patient named");
  const mine = ++generation;
  performance.clearMarks("patient-charts-drawn");
  let range = RANGES.find((r) => r.id === rangeArg) ? { kind: rangeArg } : { kind: "24h" };
  if (rangeArg && rangeArg.includes("-")) {
    const [f, t] = rangeArg.split("-").map(Number);
    if (f < t) range = { kind: "custom", from: f, to: t };
  }
  const charts = el("div", { id: "charts", class: "charts" });
  const alertsBox = el("section", { id: "patient-alerts", "aria-label": "Alerts in this range" });
  const summary = el("p", { class: "help", id: "range-summary" });
  const from = el("input", { type: "datetime-local", id: "from", "aria-label": "From" });
  const to = el("input", { type: "datetime-local", id: "to", "aria-label": "To" });
  const buttons = RANGES.map((r) => el("button", { type: "button", class: "range", dataset: { range: r.id }, "aria-pressed": String(range.kind === r.id), onclick: () => go(`#/patients/${encodeURIComponent(patient)}/${r.id}`) }, r.label));
  const custom = el("form", { class: "custom-range", onsubmit: (ev) => {
    ev.preventDefault();
    const f = new Date(from.value).getTime();
    const t = new Date(to.value).getTime();
    if (!(f < t)) { summary.textContent = "Choose a start before the end."; return; }
    go(`#/patients/${encodeURIComponent(patient)}/${f}-${t}`);
  } }, el("label", { for: "from" }, "From "), from, el("label", { for: "to" }, " to "), to, " ", el("button", { type: "submit" }, "Show"));
  show(
    el("p", { class: "crumbs" }, el("a", { href: "#/ward" }, "Ward"), " › ", patient),
    el("h1", {}, `Patient ${patient}`),
    el("div", { class: "controls", role: "group", "aria-label": "Time range" }, buttons, custom),
    el("p", { class: "help" }, "Drag across a chart to zoom in; click a point to open its reading and proof. Shaded bands are the NEWS2 sub-scores, labelled 1–3 at the right edge."),
    summary, charts, alertsBox);

  const load = async () => {
    if (mine !== generation) return;
    const now = Date.now();
    const span = range.kind === "custom" ? [range.from, range.to] : [now - RANGES.find((r) => r.id === range.kind).ms, now + 60e3];
    from.value = toLocalInput(span[0]);
    to.value = toLocalInput(span[1]);
    const width = Math.max(300, charts.clientWidth || 900);
    const points = Math.min(5000, Math.max(10, Math.round(width * 1.5)));
    const data = await api(`/v1/patients/${encodeURIComponent(patient)}/series?from=${Math.floor(span[0])}&to=${Math.ceil(span[1])}&points=${points}`);
    if (mine !== generation) return;
    render(data, charts, alertsBox, summary, patient);
    if (range.kind !== "custom") timer = setTimeout(load, REFRESH_MS);
  };
  await load();
}

function go(hash) { if (location.hash === hash) window.dispatchEvent(new HashChangeEvent("hashchange")); else location.hash = hash; }

/** The series as uPlot data, with a null where no reading arrived for a while (a gap). */
export function withGaps(s, bucketMs) {
  const diffs = [];
  for (let i = 1; i < s.t.length; i++) diffs.push(s.t[i] - s.t[i - 1]);
  const median = diffs.length ? diffs.slice().sort((a, b) => a - b)[Math.floor(diffs.length / 2)] : 0;
  const gap = Math.max(3 * bucketMs, 5 * median, 1);
  const x = [], mean = [], min = [], max = [], index = [];
  for (let i = 0; i < s.t.length; i++) {
    if (i > 0 && s.t[i] - s.t[i - 1] > gap) {
      x.push((s.t[i - 1] + s.t[i]) / 2000); mean.push(null); min.push(null); max.push(null); index.push(null);
    }
    x.push(s.t[i] / 1000); mean.push(s.mean[i]); min.push(s.min[i]); max.push(s.max[i]); index.push(s.index[i]);
  }
  return { x, mean, min, max, index };
}

/** Charts in the ward's column order: heart rate first, temperature last. */
const ORDER = ["8867-4", "2708-6", "9279-1", "8480-6", "8462-4", "8310-5"];

function render(data, charts, alertsBox, summary, patient) {
  data.series.sort((a, b) => ORDER.indexOf(a.loinc) - ORDER.indexOf(b.loinc));
  for (const p of plots) p.destroy();
  plots = [];
  charts.replaceChildren();
  const total = data.series.reduce((n, s) => n + s.readings, 0);
  const anyDecimated = data.series.some((s) => s.count.some((c) => c > 1));
  const bucket = data.bucket_ms >= 60000 ? `${Math.round(data.bucket_ms / 60000)} min` : `${Math.round(data.bucket_ms / 1000)} s`;
  summary.textContent = `${fmtTime(data.from)} to ${fmtTime(data.to)} · ${total} readings · ${anyDecimated ? `one point per ${bucket} (mean, with the min–max band)` : "every reading"}`;
  summary.dataset.readings = String(total);
  if (!data.series.length) charts.append(el("p", {}, "No readings in this range."));
  let drawn = 0;
  data.series.forEach((s) => {
    const g = withGaps(s, data.bucket_ms);
    const host = el("div", { class: "chart", dataset: { loinc: s.loinc, points: String(s.t.length), readings: String(s.readings), gaps: String(g.index.filter((x) => x === null).length) } });
    const latest = [];
    for (let i = s.t.length - 1; i >= 0 && latest.length < 5; i--) latest.push(i);
    const fig = el("figure", { class: "series", "aria-label": `${s.name} chart` },
      el("figcaption", {}, el("h2", {}, `${s.name} `, el("span", { class: "unit" }, `(${unitText(s.unit)})`)), ` ${s.readings} readings`),
      host,
      el("details", {}, el("summary", {}, "Latest values (keyboard access to the readings)"),
        el("ul", {}, latest.map((i) => el("li", {}, el("a", { href: `#/readings/${s.index[i]}` }, `${fmtTime(s.t[i])}: ${fmtValue(s.mean[i])} ${unitText(s.unit)}${s.count[i] > 1 ? ` (mean of ${s.count[i]}, ${fmtValue(s.min[i])}–${fmtValue(s.max[i])})` : ""}`))))));
    charts.append(fig);
    const width = Math.max(280, host.clientWidth || 900);
    const alerts = data.alerts.filter((a) => a.parameter === s.loinc || a.parameter === data.news2_parameter);
    const decimated = s.count.some((c) => c > 1);
    const opts = {
      width, height: 220,
      cursor: { sync: { key: `patient-${patient}` }, drag: { x: true, y: false } },
      scales: { x: { time: true, range: () => [data.from / 1000, data.to / 1000] }, y: { range: (_u, lo, hi) => {
        const [a, b] = Y_RANGE[s.loinc] || [lo, hi];
        return [Math.min(a, lo ?? a), Math.max(b, hi ?? b)];
      } } },
      axes: [{}, { size: 56 }],
      legend: { show: true },
      series: [
        {},
        { label: `${SHORT[s.loinc] || s.name} (${unitText(s.unit)})${decimated ? " mean" : ""}`, stroke: "#1565c0", width: 1.5, spanGaps: false, points: { show: g.x.length < 400 } },
        ...(decimated ? [
          { label: "min", stroke: "rgba(21,101,192,0.35)", width: 1, spanGaps: false, points: { show: false } },
          { label: "max", stroke: "rgba(21,101,192,0.35)", width: 1, spanGaps: false, points: { show: false } },
        ] : []),
      ],
      bands: decimated ? [{ series: [3, 2], fill: "rgba(21,101,192,0.12)" }] : [],
      hooks: {
        drawClear: [(u) => shadeBands(u, s.bands)],
        draw: [(u) => {
          markAlerts(u, alerts);
          if (++drawn === data.series.length) performance.mark("patient-charts-drawn");
        }],
        setSelect: [(u) => {
          if (u.select.width < 5) return;
          const f = u.posToVal(u.select.left, "x") * 1000;
          const t = u.posToVal(u.select.left + u.select.width, "x") * 1000;
          go(`#/patients/${encodeURIComponent(patient)}/${Math.floor(f)}-${Math.ceil(t)}`);
        }],
      },
    };
    const plot = new uPlot(opts, decimated ? [g.x, g.mean, g.min, g.max] : [g.x, g.mean], host);
    plot.over.addEventListener("click", () => {
      const i = plot.cursor.idx;
      if (i !== null && i !== undefined && g.index[i] !== null && plot.select.width < 5) location.hash = `#/readings/${g.index[i]}`;
    });
    plots.push(plot);
  });
  alertsBox.replaceChildren(el("h2", {}, "Alerts in this range"), data.alerts.length
    ? el("table", { class: "alerts-table" },
        el("thead", {}, el("tr", {}, ["Level", "Parameter", "Value", "State", "Opened", "Resolved", "Reading"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, data.alerts.map((a) => el("tr", { dataset: { alert: a.id } },
          el("td", {}, levelBadge(severityLevel(a.severity))), el("td", {}, a.name), el("td", {}, `${fmtValue(a.value)} ${unitText(a.unit)}`),
          el("td", {}, a.state), el("td", {}, fmtTime(a.opened_at_ms)), el("td", {}, fmtTime(a.resolved_at_ms)),
          el("td", {}, el("a", { href: `#/readings/${a.reading_index}` }, `#${a.reading_index}`))))))
    : el("p", {}, "No alerts in this range."));
}

/** Shades the NEWS2 bands behind the line, each labelled with its sub-score. */
function shadeBands(u, bands) {
  if (!bands) return;
  const ctx = u.ctx;
  const { left, top, width, height } = u.bbox;
  const [ymin, ymax] = [u.scales.y.min, u.scales.y.max];
  let lo = -Infinity;
  ctx.save();
  for (const [hi, score] of bands) {
    const upper = hi === null ? Infinity : hi;
    const a = Math.max(lo, ymin), b = Math.min(upper, ymax);
    if (score > 0 && a < b) {
      const y1 = u.valToPos(b, "y", true), y2 = u.valToPos(a, "y", true);
      ctx.fillStyle = BAND_FILL[score];
      ctx.fillRect(left, Math.max(top, y1), width, Math.min(top + height, y2) - Math.max(top, y1));
      ctx.fillStyle = "#5d4037";
      ctx.font = `${Math.round(11 * devicePixelRatio)}px sans-serif`;
      ctx.fillText(`NEWS2 ${score}`, left + width - 60 * devicePixelRatio, (Math.max(top, y1) + Math.min(top + height, y2)) / 2 + 4 * devicePixelRatio);
    }
    lo = upper;
  }
  ctx.restore();
}

/** Marks alert openings (solid line, ▲) and resolutions (dashed line, ✓). */
function markAlerts(u, alerts) {
  const ctx = u.ctx;
  const { top, height } = u.bbox;
  ctx.save();
  ctx.font = `${Math.round(11 * devicePixelRatio)}px sans-serif`;
  const mark = (ms, dashed, label, colour) => {
    const x = u.valToPos(ms / 1000, "x", true);
    if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
    ctx.strokeStyle = colour; ctx.fillStyle = colour; ctx.lineWidth = 1.5 * devicePixelRatio;
    ctx.setLineDash(dashed ? [4 * devicePixelRatio, 3 * devicePixelRatio] : []);
    ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + height); ctx.stroke();
    ctx.fillText(label, x + 3 * devicePixelRatio, top + 12 * devicePixelRatio);
  };
  for (const a of alerts) {
    const colour = a.severity >= 3 ? "#b71c1c" : "#e65100";
    mark(a.opened_at_ms, false, `▲ ${a.severity >= 3 ? "emergency" : "urgent"}`, colour);
    if (a.resolved_at_ms) mark(a.resolved_at_ms, true, "✓ resolved", "#2e7d32");
  }
  ctx.restore();
}
