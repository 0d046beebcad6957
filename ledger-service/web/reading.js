// A reading's detail (decoded reading, sensor, gateway, patient, log index, checkpoint) with
// "Verify in this browser", and the Verify page: the trust the user pins (entered once, kept
// in this browser) and any bundle pasted or uploaded, checked by the WebAssembly verifier.

import { api } from "./api.js";
import { el, show, fmtTime, unitText } from "./util.js";
import { verifyBundle, pinnedTrust, pinTrust, unpinTrust, splitPem, renderReport, verifierVersion } from "./verify.js";

function kv(rows) {
  return el("dl", { class: "kv" }, rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v ?? "—")]));
}

function trustSummary() {
  const t = pinnedTrust();
  if (!t) return el("p", { class: "warn", id: "trust-summary" }, "No trust is pinned in this browser yet: ", el("a", { href: "#/verify" }, "pin the log key and issuer certificates"), " first.");
  const name = t.log_key.split("+")[0];
  return el("p", { class: "help", id: "trust-summary" }, `Checked against the trust pinned in this browser: log key “${name}”, ${t.issuers.length} issuer certificate(s)${t.witnesses && t.witnesses.length ? `, ${t.witnesses.length} witness(es), quorum ${t.quorum}` : ""}. `, el("a", { href: "#/verify" }, "Change"));
}

/** A paste-or-upload box whose bundle is verified against the pinned trust. */
function checkOther(out) {
  const text = el("textarea", { id: "bundle-text", rows: 6, cols: 80, "aria-label": "Evidence bundle (JSON)", spellcheck: "false" });
  const file = el("input", { type: "file", id: "bundle-file", accept: ".json,application/json,application/vnd.vitals-ledger.evidence+json", "aria-label": "Evidence bundle file" });
  file.addEventListener("change", async () => { if (file.files[0]) text.value = await file.files[0].text(); });
  const go = el("button", { type: "button", id: "verify-pasted", onclick: async () => {
    const t = pinnedTrust();
    if (!t) { out.replaceChildren(trustSummary()); return; }
    out.replaceChildren(el("p", {}, "Verifying…"));
    out.replaceChildren(renderReport(await verifyBundle(text.value, t)));
  } }, "Verify this bundle");
  return el("section", { class: "card" }, el("h2", {}, "Verify a bundle you have"),
    el("p", { class: "help" }, "Paste an evidence bundle or choose its file: it is checked here, in this browser, with the same steps as ledger-verify."),
    el("label", { for: "bundle-text" }, "Bundle JSON"), text, el("div", {}, el("label", { for: "bundle-file" }, "or a file: "), file), go);
}

export async function readingPage([index]) {
  if (!/^\d+$/.test(index || "")) throw new Error("a reading is named by its log index");
  const r = await api(`/v1/readings/${index}`);
  const out = el("div", { id: "verify-result", "aria-live": "polite" });
  const otherOut = el("div", { id: "verify-other-result", "aria-live": "polite" });
  let bundleText = null;
  const fetchBundle = async () => bundleText ??= await api(`/v1/readings/${index}/evidence`, { as: "text" });
  const verifyHere = el("button", { type: "button", id: "verify-here", class: "primary", onclick: async () => {
    const t = pinnedTrust();
    if (!t) { out.replaceChildren(trustSummary()); return; }
    out.replaceChildren(el("p", {}, "Fetching the evidence and verifying…"));
    try { out.replaceChildren(renderReport(await verifyBundle(await fetchBundle(), t))); } catch (e) { out.replaceChildren(el("p", { class: "error", role: "alert" }, e.message)); }
  } }, "Verify in this browser");
  const download = el("button", { type: "button", id: "download-bundle", onclick: async () => {
    const blob = new Blob([await fetchBundle()], { type: "application/json" });
    const a = el("a", { href: URL.createObjectURL(blob), download: `reading-${index}.evidence.json` });
    document.body.append(a); a.click(); a.remove();
  } }, "Download the evidence bundle");
  show(
    el("p", { class: "crumbs" }, el("a", { href: "#/ward" }, "Ward"), r.patient ? [" › ", el("a", { href: `#/patients/${encodeURIComponent(r.patient)}` }, r.patient)] : null, ` › reading ${index}`),
    el("h1", {}, `Reading ${index}`),
    el("div", { class: "grid2" }, el("section", { class: "card" }, el("h2", {}, "Measurements"),
      el("table", { class: "measurements" }, el("thead", {}, el("tr", {}, ["Vital sign", "Value", "Unit", "LOINC"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, (r.measurements || []).map((m) => el("tr", {}, el("td", {}, m.name), el("td", { class: "value" }, m.value), el("td", {}, unitText(m.unit)), el("td", {}, m.loinc)))))),
    el("section", { class: "card" }, el("h2", {}, "Origin and path"), kv([
      ["Patient", r.patient], ["Sensor", r.sensor_id], ["Sequence number", String(r.seq)], ["Measured at", fmtTime(r.measured_at_ms)],
      ["Sensor key", el("code", {}, r.sensor_kid)], ["Gateway", r.gateway_id], ["Gateway key", el("code", {}, r.gateway_kid)],
      ["Received by the gateway", fmtTime(r.received_at_ms)], ["Logged", fmtTime(r.logged_at_ms)], ["Log index", String(r.index)],
      ["Checkpoint", r.checkpoint ? `${r.checkpoint.shard ? `${r.checkpoint.origin} (entry ${r.checkpoint.index_in_shard} of the shard): ` : ""}size ${r.checkpoint.size}, root ${r.checkpoint.root.slice(0, 16)}…` : "not yet in a published checkpoint"],
    ]))),
    el("section", { class: "card" }, el("h2", {}, "Proof"), trustSummary(), el("div", { class: "buttons" }, verifyHere, " ", download), out),
    checkOther(otherOut), otherOut);
}

export async function verifyPage() {
  const t = pinnedTrust() || { log_key: "", issuers: [], witnesses: [], quorum: 0 };
  const logKey = el("input", { id: "pin-log-key", size: 90, value: t.log_key, spellcheck: "false", "aria-describedby": "pin-help" });
  const issuers = el("textarea", { id: "pin-issuers", rows: 6, cols: 80, spellcheck: "false" });
  issuers.value = (t.issuers || []).join("");
  const witnesses = el("textarea", { id: "pin-witnesses", rows: 2, cols: 80, spellcheck: "false" });
  witnesses.value = (t.witnesses || []).join("\n");
  const quorum = el("input", { id: "pin-quorum", type: "number", min: 0, value: String(t.quorum || 0) });
  const msg = el("p", { id: "pin-message", role: "status" });
  let advertised = null;
  try { advertised = (await api("/v1/log/key")).vkey; } catch { /* shown as unknown */ }
  const form = el("form", { class: "card", id: "pin-form", onsubmit: (ev) => {
    ev.preventDefault();
    const next = {
      log_key: logKey.value.trim(),
      issuers: splitPem(issuers.value),
      witnesses: witnesses.value.split("\n").map((s) => s.trim()).filter(Boolean),
      quorum: Number(quorum.value) || 0,
      checkpoints: [],
    };
    if (!next.log_key) { msg.textContent = "The log key is required."; return; }
    pinTrust(next);
    msg.textContent = `Pinned: log key “${next.log_key.split("+")[0]}”, ${next.issuers.length} issuer certificate(s), ${next.witnesses.length} witness(es).`;
  } },
    el("h2", {}, "Pinned trust"),
    el("p", { id: "pin-help", class: "help" }, "Enter the log's public key and the issuers' CA certificates you received from the ledger's operator out of band (for example on paper or from your security team). They are kept in this browser and are all the verifier trusts."),
    el("label", { for: "pin-log-key" }, "Log key (vkey)"), logKey,
    advertised ? el("p", { class: "help" }, "This service says its key is ", el("code", { id: "advertised-key" }, advertised), advertised === t.log_key ? " — the same as pinned." : " — compare it with the key you were given; never pin it only because this page shows it.") : null,
    el("label", { for: "pin-issuers" }, "Issuer CA certificates (PEM, one or more)"), issuers,
    el("label", { for: "pin-witnesses" }, "Witness keys (vkeys, one per line; optional)"), witnesses,
    el("label", { for: "pin-quorum" }, "Witness quorum"), quorum,
    el("div", { class: "buttons" }, el("button", { type: "submit", id: "pin-save", class: "primary" }, "Pin"), " ",
      el("button", { type: "button", id: "pin-forget", onclick: () => { unpinTrust(); msg.textContent = "Forgotten."; } }, "Forget")),
    msg);
  const out = el("div", { id: "verify-other-result", "aria-live": "polite" });
  let version = "";
  try { version = await verifierVersion(); } catch (e) { version = `not loaded: ${e.message}`; }
  show(el("h1", {}, "Verify evidence in this browser"), form, checkOther(out), out,
    el("p", { class: "help", id: "verifier-version" }, `Verifier: provenance-core compiled to WebAssembly, web-verifier ${version}.`));
}
