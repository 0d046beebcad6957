// The API client: every call carries the signed-in token (kept in this browser session only,
// in sessionStorage) and turns a problem+json answer into an Error with its detail.

const KEY = "vitals-ledger.token";

export function token() { return sessionStorage.getItem(KEY); }
export function setToken(t) { sessionStorage.setItem(KEY, t); }
export function signOut() { sessionStorage.removeItem(KEY); }

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem && (problem.detail || problem.title) ? `${problem.title || "Error"}: ${problem.detail || ""}` : `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** Calls the API; `as` is "json" (default), "text" or "bytes". */
export async function api(path, { method = "GET", body, as = "json", tokenOverride } = {}) {
  const headers = { Accept: as === "json" ? "application/json" : "*/*" };
  const t = tokenOverride || token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  if (!r.ok) {
    let problem = null;
    try { problem = await r.json(); } catch { /* not JSON */ }
    throw new ApiError(r.status, problem);
  }
  if (as === "text") return r.text();
  if (as === "bytes") return new Uint8Array(await r.arrayBuffer());
  return r.json();
}
