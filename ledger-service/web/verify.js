// "Verify in this browser": provenance-core's bundle verification, compiled to WebAssembly
// (web_verifier.wasm, the web-verifier crate), run here against the trust the user pinned.
// The pinned trust — the log's key and the issuers' certificates, optionally witness keys and a
// quorum — is kept in this browser (localStorage) and never taken from the service at
// verification time: a service that lies cannot make its own evidence pass.

import { el } from "./util.js";

const TRUST_KEY = "vitals-ledger.pinned-trust";
let modulePromise = null;

/** The instantiated verifier (loaded once). */
export function verifier() {
  if (!modulePromise) {
    modulePromise = (async () => {
      const r = await fetch("web_verifier.wasm", { cache: "no-cache" });
      if (!r.ok) throw new Error(`loading the verifier: HTTP ${r.status}`);
      const { instance } = await WebAssembly.instantiate(await r.arrayBuffer(), {});
      return instance.exports;
    })();
  }
  return modulePromise;
}

function readFramed(x, ptr) {
  const n = new DataView(x.memory.buffer).getUint32(ptr, true);
  const text = new TextDecoder().decode(new Uint8Array(x.memory.buffer, ptr + 4, n));
  x.wv_free(ptr, n + 4);
  return text;
}

function copyIn(x, bytes) {
  const ptr = x.wv_alloc(bytes.length);
  new Uint8Array(x.memory.buffer, ptr, bytes.length).set(bytes);
  return ptr;
}

/**
 * Verifies a bundle (bytes or text) against pinned trust ({log_key, issuers, witnesses, quorum,
 * checkpoints}). Resolves to ledger-verify's JSON report {subject, verified, checks} or
 * {error} when the trust itself is unusable.
 */
export async function verifyBundle(bundle, trust) {
  const x = await verifier();
  const enc = new TextEncoder();
  const b = typeof bundle === "string" ? enc.encode(bundle) : bundle;
  const t = enc.encode(JSON.stringify(trust));
  const bp = copyIn(x, b);
  const tp = copyIn(x, t);
  try {
    return JSON.parse(readFramed(x, x.wv_verify(bp, b.length, tp, t.length)));
  } finally {
    x.wv_free(bp, b.length);
    x.wv_free(tp, t.length);
  }
}

export async function verifierVersion() {
  const x = await verifier();
  return readFramed(x, x.wv_version());
}

export function pinnedTrust() {
  try {
    const t = JSON.parse(localStorage.getItem(TRUST_KEY) || "null");
    return t && typeof t.log_key === "string" && t.log_key ? t : null;
  } catch { return null; }
}

export function pinTrust(t) { localStorage.setItem(TRUST_KEY, JSON.stringify(t)); }
export function unpinTrust() { localStorage.removeItem(TRUST_KEY); }

/** Splits pasted PEM text into certificates. */
export function splitPem(text) {
  return (text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) || []).map((p) => p + "\n");
}

/** The report as ledger-verify prints it: one row per step, then the verdict. */
export function renderReport(report) {
  if (report.error) {
    return el("div", { class: "verdict verdict-bad", role: "alert", id: "verdict" },
      el("strong", {}, "CANNOT VERIFY: "), report.error);
  }
  const failed = report.checks.filter((c) => !c.ok);
  const verdict = report.verified
    ? el("div", { class: "verdict verdict-ok", role: "status", id: "verdict", dataset: { verdict: "VERIFIED" } },
        el("span", { "aria-hidden": "true" }, "✔ "), el("strong", {}, "VERIFIED"), ` (${report.checks.length} checks)`)
    : el("div", { class: "verdict verdict-bad", role: "alert", id: "verdict", dataset: { verdict: "NOT VERIFIED", failedStep: failed.length ? failed[0].step : "" } },
        el("span", { "aria-hidden": "true" }, "✘ "), el("strong", {}, "NOT VERIFIED"),
        `: ${failed.length} of ${report.checks.length} checks failed — first failing step `,
        el("code", { class: "failed-step" }, failed.length ? failed[0].step : "none"));
  const rows = report.checks.map((c) => el("tr", { class: c.ok ? "ok" : "fail", dataset: { step: c.step, ok: String(c.ok) } },
    el("td", {}, el("span", { class: c.ok ? "mark-ok" : "mark-fail" }, c.ok ? "ok" : "FAIL")),
    el("td", {}, el("code", {}, c.step)),
    el("td", {}, c.detail)));
  return el("section", { class: "report", "aria-label": "Verification report" },
    verdict,
    el("table", { class: "steps" },
      el("caption", {}, "Each step, as ledger-verify names it"),
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Result"), el("th", { scope: "col" }, "Step"), el("th", { scope: "col" }, "What was found"))),
      el("tbody", {}, rows)));
}

/**
 * Private mode: verifies and decrypts a household feed page (bytes) with the household's key
 * (hex), the pinned trust and the app's state — provenance-core's verify_feed, the code behind
 * `vitals-home fetch`. Resolves to {page, warnings, unaccepted, messages, next_after, state} or
 * {error}.
 */
export async function verifyFeed(feed, trust, secret, state) {
  const x = await verifier();
  const input = new TextEncoder().encode(JSON.stringify({ trust, secret, state }));
  const fp = copyIn(x, feed);
  const ip = copyIn(x, input);
  try {
    return JSON.parse(readFramed(x, x.wv_home(fp, feed.length, ip, input.length)));
  } finally {
    x.wv_free(fp, feed.length);
    input.fill(0);
    new Uint8Array(x.memory.buffer, ip, input.length).fill(0); // the key leaves no copy behind
    x.wv_free(ip, input.length);
  }
}

/** The public key and KeyId of a recipient key (hex), or {error}. */
export async function recipientPublic(secret) {
  const x = await verifier();
  const b = new TextEncoder().encode(secret);
  const p = copyIn(x, b);
  try {
    return JSON.parse(readFramed(x, x.wv_recipient_public(p, b.length)));
  } finally {
    new Uint8Array(x.memory.buffer, p, b.length).fill(0);
    x.wv_free(p, b.length);
  }
}
