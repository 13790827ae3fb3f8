// Users (operators): every account with its roles, second factor and state; add one (its one-time
// enrolment code is shown once, here, and never again), disable, enable, unlock, reset its second
// factor (a new code, shown once) and change its roles. Over /users (people_routes.py).
import { api, el, say, start, table } from "./app.js";

const me = await start("users.html");
const ROLES = ["clinician", "operator", "auditor"];
const where = document.getElementById("users");
const once = document.getElementById("code-once");

/** Show a one-time enrolment code until the operator dismisses it (nothing keeps it). */
function showCode(name, code) {
  const done = el("button", { type: "button", class: "secondary", onclick: () => { once.replaceChildren(); document.getElementById("new-name").focus(); } }, "I have handed it over");
  once.replaceChildren(el("section", { class: "once", "aria-labelledby": "once-title" },
    el("h2", { id: "once-title", tabindex: "-1" }, `Enrolment code for ${name}`),
    el("p", {}, "Hand this code to the person now: it is shown only once, and expires. They enrol with it at ",
      el("a", { href: "/console/enrol.html" }, "the enrolment page"), "."),
    el("p", {}, el("code", { id: "enrolment-code" }, code)), done));
  document.getElementById("once-title").focus();
}

function state(u) {
  const parts = [];
  if (u.disabled) parts.push(el("span", { class: "badge error" }, "disabled"));
  if (u.locked) parts.push(el("span", { class: "badge warning" }, "locked"));
  if (u.enrolment_pending) parts.push(el("span", { class: "badge" }, "enrolment pending"));
  if (!parts.length) parts.push(el("span", { class: "badge ok" }, "active"));
  return el("span", { class: "user-state" }, ...parts.flatMap((p) => [p, " "]));
}

async function act(name, what, label) {
  say("");
  try {
    const answer = await api("POST", `/users/${encodeURIComponent(name)}/${what}`);
    if (answer && answer.enrolment_code) showCode(name, answer.enrolment_code);
    else say(`${name}: ${label}.`, "ok");
    await load();
  } catch (error) {
    say(`${name}: ${error.message}`);
  }
}

function rolesDialog(u) {
  const boxes = ROLES.map((r) => el("input", { type: "checkbox", id: `role-${r}`, value: r, checked: u.roles.includes(r) }));
  const problem = el("p", { role: "alert", class: "error" });
  const dialog = el("dialog", { "aria-labelledby": "roles-title" });
  const form = el("form", {},
    el("h2", { id: "roles-title" }, `Roles of ${u.name}`),
    el("fieldset", {}, el("legend", {}, "Roles"), ...ROLES.flatMap((r, i) => [boxes[i], el("label", { for: `role-${r}` }, r)])),
    problem,
    el("div", { class: "buttons" }, el("button", { type: "submit" }, "Save roles"),
      el("button", { type: "button", class: "secondary", onclick: () => dialog.close() }, "Cancel")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api("PUT", `/users/${encodeURIComponent(u.name)}/roles`, { roles: boxes.filter((b) => b.checked).map((b) => b.value) });
      dialog.close();
      say(`${u.name}: roles saved.`, "ok");
      await load();
    } catch (error) {
      problem.textContent = error.message;
    }
  });
  dialog.addEventListener("close", () => dialog.remove());
  dialog.append(form);
  document.body.append(dialog);
  dialog.showModal();
  boxes[0].focus();
}

function actions(u) {
  const button = (text, onclick, cls = "secondary") =>
    el("button", { type: "button", class: cls, onclick, "aria-label": `${text} ${u.name}` }, text);
  const out = [];
  if (u.locked) out.push(button("Unlock", () => act(u.name, "unlock", "unlocked")));
  if (u.name !== me.name) {
    out.push(u.disabled ? button("Enable", () => act(u.name, "enable", "enabled"))
      : button("Disable", () => act(u.name, "disable", "disabled; its sessions ended and its tokens are revoked")));
  }
  if (!u.service) out.push(button("Reset second factor", () => {
    if (window.confirm(`Forget every second factor of ${u.name}? They must enrol again with a new code.`)) act(u.name, "reset-mfa", "");
  }));
  out.push(button("Roles", () => rolesDialog(u)));
  return el("div", { class: "buttons" }, ...out);
}

async function load() {
  try {
    const { users } = await api("GET", "/users");
    where.replaceChildren(table(`${users.length} accounts`, ["Name", "Roles", "Second factor", "Kind", "State", "Actions"],
      users.map((u) => [
        el("span", { class: "user-name" }, u.name), u.roles.join(", "),
        u.second_factor ? "enrolled" : el("span", { class: "muted" }, "none"),
        u.service ? "service account" : u.directory ? "directory" : "local",
        state(u), actions(u)])));
    for (const row of where.querySelectorAll("tbody tr")) row.dataset.user = row.querySelector(".user-name").textContent;
  } catch (error) {
    say(`Could not read the users: ${error.message}`);
  }
}

document.getElementById("add").addEventListener("submit", async (event) => {
  event.preventDefault();
  say("");
  const form = event.target;
  const name = document.getElementById("new-name").value.trim();
  const body = {
    name, roles: [...form.querySelectorAll('input[name="roles"]:checked')].map((b) => b.value),
    service: document.getElementById("new-service").checked, directory: document.getElementById("new-directory").checked,
  };
  try {
    const answer = await api("POST", "/users", body);
    form.reset();
    if (answer.enrolment_code) showCode(answer.name, answer.enrolment_code);
    else say(`${answer.name} added (a service account: make it a token on the tokens page).`, "ok");
    await load();
  } catch (error) {
    say(`Not added: ${error.message}`);
  }
});

await load();
