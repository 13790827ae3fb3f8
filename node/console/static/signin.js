// Sign-in: name and password, then a TOTP or recovery code, or a passkey (WebAuthn).
import { home, say } from "./app.js";

const passwordStep = document.getElementById("password-step");
const codeStep = document.getElementById("code-step");
let csrf = "";

async function post(path, body) {
  const answer = await fetch(path, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body),
  });
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(data.error || `HTTP ${answer.status}`);
  return data;
}

function next(roles) {
  const wanted = new URLSearchParams(location.search).get("next") || "";
  // Only a page of this console: never an address elsewhere (an open redirect).
  location.assign(/^\/console\/[a-z-]+\.html(\?[\w=&%.-]*)?$/.test(wanted) ? wanted : home(roles));
}

passwordStep.addEventListener("submit", async (event) => {
  event.preventDefault();
  say("");
  try {
    const started = await post("/session", {
      name: document.getElementById("name").value.trim(),
      password: document.getElementById("password").value,
    });
    csrf = started.csrf_token;
    document.getElementById("password").value = "";
    passwordStep.hidden = true;
    codeStep.hidden = false;
    document.getElementById("code").focus();
  } catch (error) {
    say(error.message);
  }
});

codeStep.addEventListener("submit", async (event) => {
  event.preventDefault();
  say("");
  const code = document.getElementById("code").value.trim();
  const recovery = document.getElementById("recovery").value.trim();
  try {
    const session = await post("/session/second-factor", code ? { code } : { recovery_code: recovery });
    next(session.roles);
  } catch (error) {
    say(error.message);
  }
});

// WebAuthn: the node's options carry base64url fields; the browser API wants bytes.
const fromB64 = (text) => Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
const toB64 = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

document.getElementById("passkey").addEventListener("click", async () => {
  say("");
  try {
    const options = await post("/session/passkey/options", {});
    const publicKey = {
      ...options,
      challenge: fromB64(options.challenge),
      allowCredentials: (options.allowCredentials || []).map((c) => ({ ...c, id: fromB64(c.id) })),
    };
    const credential = await navigator.credentials.get({ publicKey });
    const r = credential.response;
    const answer = {
      id: credential.id, rawId: toB64(credential.rawId), type: credential.type,
      response: {
        authenticatorData: toB64(r.authenticatorData), clientDataJSON: toB64(r.clientDataJSON),
        signature: toB64(r.signature), userHandle: r.userHandle ? toB64(r.userHandle) : null,
      },
      clientExtensionResults: {},
    };
    const session = await post("/session/passkey", { credential: JSON.stringify(answer) });
    next(session.roles);
  } catch (error) {
    say(`Passkey sign-in did not work: ${error.message}`);
  }
});

// Already signed in: go straight to the work.
fetch("/session", { credentials: "same-origin" }).then(async (answer) => {
  if (answer.ok) {
    const session = await answer.json();
    if (session.state === "active") next(session.roles);
  }
});
