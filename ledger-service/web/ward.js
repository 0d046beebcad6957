// The ward overview: every assigned patient with the latest value of each vital sign and its
// age, the aggregate NEWS2 score and the unresolved alerts (acknowledge, resolve), refreshed
// every few seconds without a reload.

import { api } from "./api.js";
import { el, show, announce, fmtAge, fmtValue, fmtTime, levelBadge, severityLevel, SHORT, unitText } from "./util.js";

const POLL_MS = 5000;
const COLUMNS = ["8867-4", "2708-6", "9279-1", "8480-6", "8462-4", "8310-5"];
let timer = null;
let generation = 0;

export function stopWard() {
  generation++;
  if (timer) clearTimeout(timer);
  timer = null;
}

export async function wardPage(_args, me) {
  const mine = ++generation;
  const canAct = me.role === "admin" || me.role === "clinician";
  const body = el("tbody", { id: "ward-rows" });
  const updated = el("p", { class: "help", id: "ward-updated" }, "");
  const table = el("table", { class: "ward", id: "ward" },
    el("caption", {}, "Patients with an assigned sensor: latest value of each vital sign, NEWS2 and open alerts"),
    el("thead", {}, el("tr", {},
      el("th", { scope: "col" }, "Patient"),
      el("th", { scope: "col" }, "Alerts"),
      el("th", { scope: "col" }, "NEWS2"),
      COLUMNS.map((c) => el("th", { scope: "col" }, SHORT[c])),
      el("th", { scope: "col" }, "Open alerts"))),
    body);
  show(el("h1", {}, "Ward overview"), updated, el("div", { class: "scroll" }, table));
  const refresh = async () => {
    if (mine !== generation) return;
    try {
      const ward = await api("/v1/ward");
      if (mine !== generation) return;
      const focusKey = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : null;
      body.replaceChildren(...ward.patients.map((p) => row(p, canAct, refresh)));
      if (!ward.patients.length) body.append(el("tr", {}, el("td", { colspan: 3 + COLUMNS.length + 1 }, "No patient has an assigned sensor.")));
      if (focusKey) { const f = body.querySelector(`[data-key="${CSS.escape(focusKey)}"]`); if (f) f.focus(); }
      const shown = ward.next_after ? ` · showing the first ${ward.patients.length} of ${ward.patients_total} patients` : "";
      updated.textContent = `Updated ${fmtTime(ward.now_ms)} · refreshes every ${POLL_MS / 1000} s${shown}`;
      updated.dataset.updatedAt = String(ward.now_ms);
    } catch (e) {
      updated.textContent = `Could not refresh: ${e.message}`;
    }
    if (mine === generation) timer = setTimeout(refresh, POLL_MS);
  };
  await refresh();
}

function row(p, canAct, refresh) {
  const byCode = Object.fromEntries(p.vitals.map((v) => [v.loinc, v]));
  const news = p.news2.score === null
    ? el("span", { class: "muted", title: "NEWS2 needs all five scored vital signs measured within the window" }, `incomplete (${p.news2.scored} of 5)`)
    : el("span", { class: `news level-${p.news2.level}` }, String(p.news2.score), p.news2.level !== "none" ? [" ", levelBadge(p.news2.level)] : null);
  return el("tr", { dataset: { patient: p.patient, level: p.alert_level } },
    el("th", { scope: "row" }, el("a", { href: `#/patients/${encodeURIComponent(p.patient)}`, dataset: { key: `p:${p.patient}` } }, p.patient)),
    el("td", {}, levelBadge(p.alert_level)),
    el("td", { class: "news2" }, news),
    COLUMNS.map((c) => {
      const v = byCode[c];
      if (!v) return el("td", { class: "muted" }, "—");
      const sub = v.news2_subscore;
      const lvl = sub >= 3 ? "emergency" : sub >= 2 ? "urgent" : "none";
      return el("td", { class: `vital level-${lvl}`, dataset: { loinc: c, value: String(v.value) } },
        el("a", { href: `#/readings/${v.reading_index}`, title: `${v.name}: reading ${v.reading_index}`, dataset: { key: `v:${p.patient}:${c}` } },
          el("span", { class: "value" }, fmtValue(v.value)), " ", el("span", { class: "unit" }, unitText(v.unit))),
        sub > 0 ? el("span", { class: "sub" }, ` (${sub})`) : null,
        el("div", { class: "age" }, fmtAge(v.age_ms)));
    }),
    el("td", {}, p.alerts.length ? el("ul", { class: "alerts" }, p.alerts.map((a) => alertItem(a, canAct, refresh))) : el("span", { class: "muted" }, "none")));
}

function alertItem(a, canAct, refresh) {
  const act = async (what) => {
    try {
      await api(`/v1/alerts/${encodeURIComponent(a.id)}/${what}`, { method: "POST" });
      announce(`Alert ${SHORT[a.parameter] || a.parameter} of ${a.patient} ${what === "acknowledge" ? "acknowledged" : "resolved"}.`);
    } catch (e) {
      announce(`Could not ${what}: ${e.message}`);
      alert(`Could not ${what} the alert: ${e.message}`);
    }
    refresh();
  };
  return el("li", { dataset: { alert: a.id, state: a.state } },
    levelBadge(severityLevel(a.severity)), " ",
    el("span", {}, `${SHORT[a.parameter] || a.name} ${fmtValue(a.value)} ${unitText(a.unit)}`), " ",
    el("span", { class: "state" }, a.state), " ",
    el("span", { class: "age" }, `since ${fmtTime(a.opened_at_ms)}`), " ",
    canAct && a.state === "open" ? el("button", { type: "button", class: "small", dataset: { action: "acknowledge", key: `a:${a.id}:ack` }, onclick: () => act("acknowledge") }, "Acknowledge") : null,
    canAct ? el("button", { type: "button", class: "small", dataset: { action: "resolve", key: `a:${a.id}:res` }, onclick: () => act("resolve") }, "Resolve") : null);
}
