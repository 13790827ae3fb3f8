// API tokens: one's own (make, revoke) and, for operators, every token of the node (revoke).
// Over /tokens (people_routes.py); a token's secret is shown once, when it is made.
import { api, el, say, start, table, time } from "./app.js";
import { createPasskey } from "./webauthn.js";

const me = await start("tokens.html");
const operator = me.roles.includes("operator");
document.getElementById("token-role").replaceChildren(...me.roles.map((r) => el("option", { value: r }, r)));
document.getElementById("all-section").hidden = !operator;

function status(t) {
  if (t.revoked_ms) return el("span", { class: "unverified" }, `revoked ${time(t.revoked_ms)}`);
  return t.live ? el("span", { class: "verified" }, "live") : el("span", { class: "muted" }, "expired");
}

function rows(tokens, withOwner) {
  return tokens.map((t) => [
    ...(withOwner ? [t.owner] : []), t.label || el("span", { class: "muted" }, "(no label)"), t.role,
    time(t.created_ms), time(t.expires_ms), status(t),
    t.live ? el("button", { type: "button", class: "secondary", "aria-label": `Revoke token ${t.label || t.token_id}`,
      onclick: () => revoke(t) }, "Revoke") : ""]);
}

async function revoke(t) {
  if (!window.confirm(`Revoke the token ${t.label || t.token_id}? Whatever uses it stops at once.`)) return;
  try {
    await api("DELETE", `/tokens/${encodeURIComponent(t.token_id)}`);
    say("Token revoked.", "ok");
    await load();
  } catch (error) {
    say(`Not revoked: ${error.message}`);
  }
}

async function load() {
  try {
    const { tokens } = await api("GET", "/tokens");
    document.getElementById("own").replaceChildren(tokens.length
      ? table(`${tokens.length} tokens`, ["Label", "Role", "Made", "Expires", "State", ""], rows(tokens, false))
      : el("p", { class: "muted" }, "You have no token."));
    if (operator) {
      const all = (await api("GET", "/tokens?all=1")).tokens;
      document.getElementById("all").replaceChildren(
        table(`${all.length} tokens`, ["Owner", "Label", "Role", "Made", "Expires", "State", ""], rows(all, true)));
    }
  } catch (error) {
    say(`Could not read the tokens: ${error.message}`);
  }
}

document.getElementById("make").addEventListener("submit", async (event) => {
  event.preventDefault();
  say("");
  const days = Number(document.getElementById("token-days").value);
  try {
    const made = await api("POST", "/tokens", {
      role: document.getElementById("token-role").value, label: document.getElementById("token-label").value.trim(),
      ttl_s: Math.round(days * 86400),
    });
    const place = document.getElementById("secret-once");
    place.replaceChildren(el("section", { class: "once", "aria-labelledby": "secret-title" },
      el("h2", { id: "secret-title", tabindex: "-1" }, "Your new token"),
      el("p", {}, `Copy it now: it is shown only once. It acts as you with the role ${made.role} until ${time(made.expires_ms)}.`),
      el("p", {}, el("code", { id: "token-secret" }, made.token)),
      el("button", { type: "button", class: "secondary", onclick: () => place.replaceChildren() }, "I have copied it")));
    document.getElementById("secret-title").focus();
    event.target.reset();
    await load();
  } catch (error) {
    say(`No token made: ${error.message}`);
  }
});

document.getElementById("add-passkey").addEventListener("click", async () => {
  say("");
  try {
    // Adding a second factor is consequential: api() asks for the code again if the last is stale.
    const options = await api("POST", "/passkeys/options");
    const credential = await createPasskey(options);
    await api("POST", "/passkeys", { credential: JSON.stringify(credential) });
    say("Passkey added: you may use it instead of a code when you sign in.", "ok");
  } catch (error) {
    say(`No passkey added: ${error.message}`);
  }
});

await load();
