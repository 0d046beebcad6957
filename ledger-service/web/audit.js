// The auditor's and admin's pages: the log's status (size, ingest rate, the latest
// checkpoint's age and witness cosignatures), the device registry with each device's full
// history, webhook endpoints with their deliveries, and export jobs with their progress.

import { api } from "./api.js";
import { el, show, fmtTime, fmtAge } from "./util.js";

function kv(rows) {
  return el("dl", { class: "kv" }, rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v ?? "—")]));
}

function table(caption, heads, rows, attrs = {}) {
  return el("table", attrs, el("caption", {}, caption),
    el("thead", {}, el("tr", {}, heads.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: heads.length }, "None."))));
}

export async function logPage() {
  const s = await api("/v1/log/status");
  const cp = s.checkpoint;
  const cosigs = cp ? cp.note.split("\n").filter((l) => l.startsWith("— ")).map((l) => l.slice(2).split(" ")[0]) : [];
  show(el("h1", {}, "Log status"),
    el("section", { class: "card" }, kv([
      ["Origin", el("code", {}, s.origin)],
      ["Log key", el("code", { id: "log-key" }, s.log_key)],
      ["Entries", el("span", { id: "log-size" }, String(s.size))],
      ["Ingest rate", `${s.ingest_per_second.toFixed(1)} entries/s (${s.entries_last_minute} in the last minute)`],
      ["Shard", s.shard ? el("span", { id: "log-shard" }, `${s.shard.name} (shard ${s.shard.number} of ${s.shard.shards}: `, el("code", {}, s.shard.origin), `, from ledger position ${s.shard.base}; readings measured from ${fmtTime(s.shard.start_ms - s.shard.grace_ms)} to ${fmtTime(s.shard.end_ms)})`) : null],
      ["Latest checkpoint", cp ? `${s.shard ? `${cp.origin}: ` : ""}size ${cp.size}, published ${fmtTime(cp.published_at_ms)} (${fmtAge(cp.age_ms)})` : "none yet"],
      ["Checkpoint root", cp ? el("code", {}, cp.root) : null],
      ["Signatures on it", cp ? el("span", { id: "cosigners" }, `${cosigs.join(", ")} (witness quorum ${s.witness_quorum})`) : null],
      ["Registry events", String(s.registry_events)],
      ["Storage", s.engine], ["This node", s.leader ? "runs the sequencer" : "standby"],
    ])),
    cp ? el("section", { class: "card" }, el("h2", {}, "The checkpoint as signed"), el("pre", { id: "checkpoint-note" }, cp.note)) : null);
}

export async function registryPage() {
  const r = await api("/v1/registry/devices");
  const history = (h) => el("ol", { class: "history" }, h.map((e) => el("li", {},
    el("code", {}, `#${e.index}`), ` ${fmtTime(e.logged_at_ms)} · `, el("strong", {}, e.type || "?"), ` — ${e.summary || e.error || ""}`)));
  const keys = (ks) => el("ul", {}, ks.map((k) => el("li", {}, el("code", {}, k.key_id.slice(0, 16)), ` from ${fmtTime(k.valid_from_ms)}`,
    k.retired ? ` · retired at #${k.retired.index}` : "", k.revocations.length ? el("strong", { class: "revoked" }, ` · REVOKED (#${k.revocations.map((x) => x.index).join(", #")})`) : "")));
  show(el("h1", {}, "Device registry"),
    el("p", { class: "help" }, `${r.registry_events} logged registry events. Every change to the registry is an entry of the log, so each device's history below is provable.`),
    table("Issuers", ["Name", "Role", "Key", "History"], r.issuers.map((i) => el("tr", {}, el("th", { scope: "row" }, i.name), el("td", {}, i.role), el("td", {}, el("code", {}, i.key_id.slice(0, 16))), el("td", {}, history(i.history))))),
    table("Sensors and gateways", ["Device", "Role", "Keys", "Bindings / patients", "History"], r.devices.map((d) => el("tr", { dataset: { device: d.id } },
      el("th", { scope: "row" }, d.id), el("td", {}, d.role), el("td", {}, keys(d.keys)),
      el("td", {}, el("ul", {}, d.bindings.map((b) => el("li", {}, `gateway ${b.gateway_id} from ${fmtTime(b.from_ms)}${b.until_ms ? ` until ${fmtTime(b.until_ms)}` : ""}`)),
        d.assignments.map((a) => el("li", {}, `patient ${a.patient} from ${fmtTime(a.from_ms)}`)))),
      el("td", {}, history(d.history)))), { class: "registry", id: "devices" }));
}

export async function webhooksPage() {
  const [eps, msgs] = await Promise.all([api("/v1/webhooks/endpoints"), api("/v1/webhooks/messages?limit=100")]);
  show(el("h1", {}, "Webhooks"),
    table("Endpoints", ["Endpoint", "URL", "Events", "State"], eps.endpoints.map((e) => el("tr", {},
      el("th", { scope: "row" }, el("code", {}, e.id)), el("td", {}, e.url), el("td", {}, e.event_types.join(", ")),
      el("td", {}, e.disabled_reason ? el("strong", {}, `DISABLED: ${e.disabled_reason}`) : "enabled")))),
    table("Latest deliveries", ["Message", "Endpoint", "Event", "State", "Attempts", "Last answer", "Created"], msgs.messages.map((m) => el("tr", { dataset: { state: m.state } },
      el("td", {}, el("code", {}, m.msg_id)), el("td", {}, el("code", {}, m.endpoint_id)), el("td", {}, m.event_type),
      el("td", {}, m.state === "dead" ? el("strong", {}, "DEAD") : m.state), el("td", {}, String(m.attempts)),
      el("td", {}, m.last_status ? `HTTP ${m.last_status}` : (m.last_error || "—")), el("td", {}, fmtTime(m.created_at_ms))))));
}

export async function exportsPage() {
  const { jobs } = await api("/v1/fhir/export-jobs");
  show(el("h1", {}, "Export jobs"),
    table("Newest first", ["Job", "State", "Requested by", "Patient", "Progress", "Created", "Acknowledged"], jobs.map((j) => {
      const pct = j.entries_total ? Math.round((100 * j.entries_done) / j.entries_total) : 100;
      return el("tr", { dataset: { job: j.id, state: j.state } },
        el("th", { scope: "row" }, el("code", {}, j.id)), el("td", {}, j.state === "failed" ? el("strong", {}, `FAILED: ${j.error || ""}`) : j.state),
        el("td", {}, j.requested_by), el("td", {}, j.patient || "all"),
        el("td", {}, el("progress", { max: 100, value: pct, "aria-label": `${pct} %` }), ` ${j.entries_done} of ${j.entries_total} entries (${pct} %)`),
        el("td", {}, fmtTime(j.created_at_ms)), el("td", {}, j.acknowledged_at_ms ? `${fmtTime(j.acknowledged_at_ms)} by ${j.acknowledged_by}` : "—"));
    })));
}
