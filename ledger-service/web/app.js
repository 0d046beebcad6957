// The web app: sign-in, the pages each role may open, and a hash router (#/ward,
// #/patients/<p>, #/readings/<i>, #/verify, #/log, #/registry, #/webhooks, #/exports, and a
// household's #/home).

import { api, token, setToken, signOut, ApiError } from "./api.js";
import { el, show } from "./util.js";
import { wardPage, stopWard } from "./ward.js";
import { patientPage, stopPatient } from "./patient.js";
import { readingPage, verifyPage } from "./reading.js";
import { logPage, registryPage, webhooksPage, exportsPage } from "./audit.js";
import { homePage, stopHome } from "./home.js";

/** The pages, in menu order, with the roles that may open them (as the API allows). */
const PAGES = [
  { id: "ward", title: "Ward", roles: ["admin", "clinician", "auditor"], render: wardPage },
  { id: "home", title: "Home", roles: ["household"], render: homePage },
  { id: "verify", title: "Verify", roles: ["admin", "clinician", "auditor", "archivist", "household"], render: verifyPage },
  { id: "log", title: "Log", roles: ["admin", "clinician", "auditor", "archivist"], render: logPage },
  { id: "registry", title: "Registry", roles: ["admin", "auditor"], render: registryPage },
  { id: "webhooks", title: "Webhooks", roles: ["admin"], render: webhooksPage },
  { id: "exports", title: "Exports", roles: ["admin", "archivist"], render: exportsPage },
];
const HIDDEN = [
  { id: "patients", roles: ["admin", "clinician", "auditor"], render: patientPage },
  { id: "readings", roles: ["admin", "clinician", "auditor", "archivist"], render: readingPage },
];

let me = null;

function signInPage(message) {
  const input = el("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true, size: 48, "aria-describedby": "token-help" });
  const err = el("p", { class: "error", role: "alert", id: "signin-error" }, message || "");
  const form = el("form", { class: "card signin", id: "signin" },
    el("h1", {}, "Sign in"),
    el("label", { for: "token" }, "API token"),
    input,
    el("p", { id: "token-help", class: "help" }, "Your ledger API token. It is kept in this browser tab only and forgotten when the tab closes."),
    el("button", { type: "submit" }, "Sign in"),
    err);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const t = input.value.trim();
    try {
      me = await api("/v1/me", { tokenOverride: t });
      setToken(t);
      location.hash = `#/${firstPage().id}`;
      route();
    } catch (e) {
      err.textContent = e instanceof ApiError && e.status === 401 ? "That token is not valid (unknown, expired or revoked)." : `Sign-in failed: ${e.message}`;
    }
  });
  document.getElementById("nav").replaceChildren();
  document.getElementById("who").replaceChildren();
  show(form);
}

function allowed() { return PAGES.filter((p) => me && p.roles.includes(me.role)); }
function firstPage() { return allowed()[0] || PAGES[0]; }

function renderNav(current) {
  const items = allowed().map((p) => el("a", { href: `#/${p.id}`, "aria-current": p.id === current ? "page" : null }, p.title));
  document.getElementById("nav").replaceChildren(...items);
  const out = el("button", { type: "button", class: "link", id: "signout", onclick: () => { signOut(); me = null; location.hash = ""; signInPage("Signed out."); } }, "Sign out");
  document.getElementById("who").replaceChildren(el("span", { id: "whoami" }, `${me.name} (${me.role})`), " ", out);
}

export async function route() {
  stopWard();
  stopPatient();
  stopHome();
  if (!token()) return signInPage();
  if (!me) {
    try { me = await api("/v1/me"); } catch (e) {
      signOut();
      return signInPage(e.status === 401 ? "Your session's token is no longer valid: sign in again." : e.message);
    }
  }
  const [, id, ...rest] = (location.hash || "").replace(/^#/, "").split("/");
  const page = [...PAGES, ...HIDDEN].find((p) => p.id === id);
  if (!page) { location.hash = `#/${firstPage().id}`; return; }
  renderNav(page.id);
  if (!page.roles.includes(me.role)) {
    return show(el("h1", {}, "Not available"), el("p", {}, allowed().length
      ? `The ${me.role} role may not open this page.`
      : `The ${me.role} role has no pages in the web app.`));
  }
  try {
    await page.render(rest.map(decodeURIComponent), me);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) { signOut(); me = null; return signInPage("Your token is no longer valid: sign in again."); }
    show(el("h1", {}, "Something went wrong"), el("p", { class: "error", role: "alert" }, e.message));
  }
}

window.addEventListener("hashchange", route);
route();
