// Private mode (issue #17): a household's own page. The household's recipient key lives in
// this browser (localStorage) and nowhere else; the service sends ciphertext it cannot read.
// Each feed page is verified and decrypted here by provenance-core compiled to WebAssembly (the
// code behind `vitals-home fetch`): the checkpoint against the pinned log key, every proof, the
// household's key history against the changes this browser accepted, replays, both signatures.
// The room's temperature is drawn from the readings that passed, hourly mean/min/max and warm
// and cold spells beside it.

import { api } from "./api.js";
import { el, show, fmtTime, fmtValue } from "./util.js";
import { pinnedTrust, verifyFeed, recipientPublic } from "./verify.js";

const ROOM = "60832-3";
const MAX_KEPT = 50000;
const WARM = 21, COLD = 17;
let plot = null;

const keyName = (h) => `vitals-ledger.home-key.${h}`;
const stateName = (h) => `vitals-ledger.home-state.${h}`;
const readingsName = (h) => `vitals-ledger.home-readings.${h}`;

function load(name, fallback) {
  try { return JSON.parse(localStorage.getItem(name) || "null") ?? fallback; } catch { return fallback; }
}

function freshState(household) {
  return { household, accepted: [], last_index: null, gateway_seq: {}, sensor_seq: {}, checkpoint_size: 0 };
}

function randomKey() {
  const b = new Uint8Array(32);
  crypto.getRandomValues(b);
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

/** Hourly mean, min and max of (t, v) pairs in time order. */
export function hourly(values) {
  const out = [];
  for (const [t, v] of values) {
    const start = t - (t % 3600e3);
    const h = out[out.length - 1];
    if (h && h.start === start) {
      h.n += 1; h.mean += (v - h.mean) / h.n; h.min = Math.min(h.min, v); h.max = Math.max(h.max, v);
    } else out.push({ start, mean: v, min: v, max: v, n: 1 });
  }
  return out;
}

/** Runs above `warm` or below `cold`. */
export function spells(values, warm, cold) {
  const out = [];
  let open = null;
  for (const [t, v] of values) {
    const kind = v > warm ? "warm" : v < cold ? "cold" : null;
    if (open && open.kind === kind) { open.to = t; open.extreme = kind === "warm" ? Math.max(open.extreme, v) : Math.min(open.extreme, v); continue; }
    if (open) out.push(open);
    open = kind ? { kind, from: t, to: t, extreme: v } : null;
  }
  if (open) out.push(open);
  return out;
}

export function stopHome() {
  if (plot) plot.destroy();
  plot = null;
}

export async function homePage(_args, me) {
  stopHome();
  performance.clearMarks("home-chart-drawn");
  const household = me.household;
  if (!household) return show(el("h1", {}, "No household"), el("p", {}, "This page is for a household token."));
  const secret = localStorage.getItem(keyName(household));
  const trust = pinnedTrust();
  const title = el("h1", {}, `Household ${household}`);
  const intro = el("p", { class: "help" }, "Your readings travel encrypted from your home's gateway to this browser. The ledger stores and proves them but cannot read them: this page decrypts and verifies them here, with your key, against the log key you pinned.");
  if (!secret) return show(title, intro, keySetup(household));
  if (!trust) {
    return show(title, intro, el("p", { role: "alert", id: "home-needs-trust" }, "Pin the log's key and the issuers' certificates on the ",
      el("a", { href: "#/verify" }, "Verify page"), " first: they are what this page trusts, not the service."));
  }
  const pub = await recipientPublic(secret);
  const status = el("p", { id: "home-status", role: "status" }, "Fetching and verifying…");
  const warnings = el("section", { id: "home-warnings", "aria-label": "Changes to your household" });
  const refused = el("section", { id: "home-refused", "aria-label": "Messages refused" });
  const chartHost = el("div", { id: "home-chart", class: "chart" });
  const table = el("section", { id: "home-hours", "aria-label": "Hourly temperature" });
  show(title, intro,
    el("p", {}, "Your key in this browser: ", el("code", { id: "home-key-id" }, pub.key_id || pub.error), " (public key ", el("code", { id: "home-public-key" }, pub.public_key || ""), ")"),
    el("p", {}, el("button", { type: "button", id: "home-fetch", onclick: () => homePage(_args, me) }, "Fetch new readings")),
    status, warnings, refused, chartHost, table);

  let state = load(stateName(household), freshState(household));
  const kept = load(readingsName(household), []);
  const seenWarnings = new Map();
  const refusedList = new Map();
  let shown = 0;
  let unaccepted = new Set();
  let after = state.last_index;
  for (let pages = 0; pages < 50; pages++) {
    const q = after === null || after === undefined ? "" : `&after=${after}`;
    const feed = await api(`/v1/households/${encodeURIComponent(household)}/feed?limit=500${q}`, { as: "bytes" });
    const out = await verifyFeed(feed, trust, secret, state);
    if (out.error) { status.textContent = `Cannot verify: ${out.error}`; return; }
    out.warnings.forEach((w) => seenWarnings.set(w, true));
    out.unaccepted.forEach((i) => unaccepted.add(i));
    if (!out.page.verified) {
      const f = out.page.checks.filter((c) => !c.ok);
      refusedList.set("page", `The whole page was refused: ${f.map((c) => `${c.step}: ${c.detail}`).join("; ")}`);
      break;
    }
    for (const m of out.messages) {
      if (m.reading) { kept.push(m.reading); shown++; } else {
        const f = m.report.checks.filter((c) => !c.ok);
        refusedList.set(m.index, f.map((c) => `${c.step}: ${c.detail}`).join("; "));
      }
    }
    state = out.state;
    if (out.next_after === null || out.next_after === undefined || out.next_after === after) break;
    after = out.next_after;
  }
  localStorage.setItem(stateName(household), JSON.stringify(state));
  localStorage.setItem(readingsName(household), JSON.stringify(kept.slice(-MAX_KEPT)));

  status.textContent = `${shown} new reading${shown === 1 ? "" : "s"} verified and decrypted in this browser; ${kept.length} kept.`;
  status.dataset.shown = String(shown);
  if (seenWarnings.size) {
    warnings.replaceChildren(el("h2", {}, "Your household changed without this browser"),
      el("ul", {}, [...seenWarnings.keys()].map((w) => el("li", { class: "warning" }, w))),
      el("p", { class: "help" }, "A new recipient can read every message sent to it. Accept only changes you know of."),
      el("button", { type: "button", id: "home-accept", onclick: () => {
        state.accepted = [...new Set([...state.accepted, ...unaccepted])].sort((a, b) => a - b);
        localStorage.setItem(stateName(household), JSON.stringify(state));
        homePage(_args, me);
      } }, "I know these changes: accept them"));
    warnings.dataset.count = String(seenWarnings.size);
  }
  if (refusedList.size) {
    refused.replaceChildren(el("h2", {}, "Messages not shown"),
      el("ul", {}, [...refusedList.entries()].map(([i, why]) => el("li", { class: "refused", dataset: { index: String(i) } },
        i === "page" ? why : `Entry ${i}: ${why}`))));
    refused.dataset.count = String(refusedList.size);
  }
  draw(kept, chartHost, table);
}

function keySetup(household) {
  const input = el("input", { id: "home-import", type: "password", autocomplete: "off", size: 66, "aria-label": "Recipient key (64 hex digits)" });
  const msg = el("p", { id: "home-key-message", role: "status" });
  return el("section", { class: "card", id: "home-key-setup" },
    el("h2", {}, "Your household key"),
    el("p", {}, "Make a key in this browser and give its public key to your administrator to enroll, or bring the key of your vitals-home app (the contents of its recipient.key)."),
    el("button", { type: "button", id: "home-make-key", onclick: async () => {
      const k = randomKey();
      const p = await recipientPublic(k);
      localStorage.setItem(keyName(household), k);
      msg.textContent = `Key made. Public key to enroll: ${p.public_key}`;
    } }, "Make a key in this browser"),
    el("form", { onsubmit: async (ev) => {
      ev.preventDefault();
      const p = await recipientPublic(input.value);
      if (p.error) { msg.textContent = p.error; return; }
      localStorage.setItem(keyName(household), input.value.trim());
      input.value = "";
      location.reload();
    } }, el("label", { for: "home-import" }, "Key: "), input, el("button", { type: "submit" }, "Use this key")),
    msg);
}

function draw(kept, host, table) {
  const values = kept
    .flatMap((r) => r.measurements.filter(([l]) => l === ROOM).map(([, v]) => [r.measured_at_ms, Number(v)]))
    .sort((a, b) => a[0] - b[0]);
  host.dataset.points = String(values.length);
  if (!values.length) {
    host.replaceChildren(el("p", {}, "No room temperature yet."));
    performance.mark("home-chart-drawn");
    return;
  }
  const hours = hourly(values);
  const marks = spells(values, WARM, COLD);
  const width = Math.max(280, host.clientWidth || 900);
  plot = new uPlot({
    width, height: 260,
    scales: { x: { time: true }, y: { range: (_u, lo, hi) => [Math.min(15, lo), Math.max(23, hi)] } },
    axes: [{}, { size: 56 }],
    series: [{}, { label: "room temperature (°C)", stroke: "#1565c0", width: 1.5, points: { show: values.length < 300 } }],
    hooks: { draw: [() => performance.mark("home-chart-drawn")] },
  }, [values.map(([t]) => t / 1000), values.map(([, v]) => v)], host);
  table.replaceChildren(
    el("h2", {}, "By the hour"),
    el("table", { id: "home-hours-table" },
      el("thead", {}, el("tr", {}, ["Hour", "Mean", "Min", "Max", "Readings"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, hours.map((h) => el("tr", {}, el("td", {}, fmtTime(h.start)), el("td", {}, fmtValue(Math.round(h.mean * 100) / 100)),
        el("td", {}, fmtValue(h.min)), el("td", {}, fmtValue(h.max)), el("td", {}, String(h.n)))))),
    el("h2", {}, "Warm and cold spells"),
    marks.length
      ? el("ul", { id: "home-spells" }, marks.map((m) => el("li", {}, `${m.kind} from ${fmtTime(m.from)} to ${fmtTime(m.to)} (reaching ${fmtValue(m.extreme)} °C)`)))
      : el("p", {}, `Between ${COLD} and ${WARM} °C all along.`));
}
