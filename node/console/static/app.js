// The console's shared module: API calls with the session's CSRF token and the step-up prompt,
// the navigation, and formatting (times in the browser's own time zone, through Intl).
// Every figure shown comes from the node's JSON API, the same one the CLI reads.

const TIME = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
let session = null;

/** Create an element; children are nodes or text (never parsed as HTML). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** A time (ms since the epoch) in the browser's time zone. */
export function time(ms) {
  if (!ms) return "";
  const date = new Date(ms);
  // Beyond what a Date holds (a token that never expires is stored as 2**63 - 1): say so, not throw.
  return Number.isNaN(date.getTime()) ? "never" : TIME.format(date);
}

/** A byte count for people. */
export function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function raw(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (session && session.csrf_token && method !== "GET") headers["X-CSRF-Token"] = session.csrf_token;
  const answer = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const type = answer.headers.get("Content-Type") || "";
  const data = answer.status === 204 ? null : type.includes("json") ? await answer.json() : await answer.text();
  return { status: answer.status, data };
}

/** Call the API; a 403 asking for the second factor again prompts for it, then retries once. */
export async function api(method, path, body) {
  let { status, data } = await raw(method, path, body);
  if (status === 403 && data && /second factor again/.test(data.error || "")) {
    if (await stepUp()) ({ status, data } = await raw(method, path, body));
  }
  if (status === 401 && !location.pathname.endsWith("/index.html") && location.pathname !== "/console/") {
    location.assign("/console/?next=" + encodeURIComponent(location.pathname + location.search));
    throw new ApiError(401, "sign in first");
  }
  if (status >= 400) throw new ApiError(status, (data && data.error) || `HTTP ${status}`);
  return data;
}

/** Ask for a TOTP or recovery code again (a consequential action); true once verified. */
export function stepUp() {
  const dialog = el("dialog", { "aria-labelledby": "stepup-title" });
  const input = el("input", { id: "stepup-code", name: "code", autocomplete: "one-time-code", required: true });
  const problem = el("p", { role: "alert", class: "error" });
  const form = el("form", { method: "dialog" },
    el("h2", { id: "stepup-title" }, "Confirm it is you"),
    el("p", {}, "This action needs your second factor again."),
    el("label", { for: "stepup-code" }, "Authenticator or recovery code"), input, problem,
    el("div", { class: "buttons" },
      el("button", { type: "submit", value: "ok" }, "Confirm"),
      el("button", { type: "button", onclick: () => dialog.close("cancel") }, "Cancel")));
  dialog.append(form);
  document.body.append(dialog);
  return new Promise((resolve) => {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const code = input.value.trim();
      const body = /^\d{6,8}$/.test(code) ? { code } : { recovery_code: code };
      const { status, data } = await raw("POST", "/session/second-factor", body);
      if (status === 200) { dialog.close("ok"); dialog.remove(); resolve(true); }
      else problem.textContent = (data && data.error) || "not accepted";
    });
    dialog.addEventListener("cancel", () => { dialog.remove(); resolve(false); });
    dialog.addEventListener("close", () => { if (dialog.returnValue !== "ok") { dialog.remove(); resolve(false); } });
    dialog.showModal();
    input.focus();
  });
}

const PAGES = [
  ["inbox.html", "Inbox and outbox", "clinician"],
  ["send.html", "Send a study", "clinician"],
  ["overview.html", "Overview", "operator"],
  ["explorer.html", "Ledger", "operator"],
  ["users.html", "Users", "operator"],
  ["audit.html", "Audit", "auditor"],
  ["tokens.html", "Tokens", null],
];

/** The signed-in session (redirects to sign-in without one), and the page's header. */
export async function start(current) {
  const { status, data } = await raw("GET", "/session");
  if (status !== 200 || (data.state !== "active" && data.state !== "token")) {
    location.assign("/console/?next=" + encodeURIComponent(location.pathname + location.search));
    return new Promise(() => {});
  }
  session = data;
  const links = PAGES.filter(([, , role]) => role === null || data.roles.includes(role)).map(([href, label]) =>
    el("li", {}, el("a", { href, "aria-current": href === current ? "page" : null }, label)));
  const header = document.querySelector("header");
  header.replaceChildren(
    el("a", { class: "brand", href: "/console/" }, "MFTP"),
    el("nav", { "aria-label": "Console" }, el("ul", {}, links)),
    el("span", { class: "who" }, `${data.name} (${data.roles.join(", ")})`),
    el("button", { type: "button", onclick: signOut }, "Sign out"));
  return data;
}

export async function signOut() {
  await raw("DELETE", "/session");
  location.assign("/console/");
}

/** The landing page for a role set. */
// A step of signing in or enrolling (before a session exists): JSON in and out, with the CSRF
// token the first step answered; a refusal throws the node's message.
export async function postStep(path, body, csrf = "") {
  const answer = await fetch(path, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body),
  });
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(data.error || `HTTP ${answer.status}`);
  return data;
}

export function home(roles) {
  if (roles.includes("clinician")) return "inbox.html";
  if (roles.includes("operator")) return "overview.html";
  return "audit.html";
}

/** Show a problem in the page's status region. */
export function say(message, kind = "error") {
  const region = document.getElementById("status");
  if (region) { region.textContent = message; region.className = kind; }
}

/** A table with a caption, header cells and rows (arrays of nodes or text). */
export function table(caption, headings, rows) {
  return el("table", {},
    el("caption", {}, caption),
    el("thead", {}, el("tr", {}, headings.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c))))));
}

/** Save JSON or text as a file the browser downloads. */
export function download(name, content, type = "application/json") {
  const text = typeof content === "string" ? content : JSON.stringify(content, null, 2);
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = el("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
