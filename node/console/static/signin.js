// Sign-in: name and password, then a TOTP or recovery code, or a passkey (WebAuthn).
import { home, postStep, say } from "./app.js";
import { usePasskey } from "./webauthn.js";

const passwordStep = document.getElementById("password-step");
const codeStep = document.getElementById("code-step");
let csrf = "";

const post = (path, body) => postStep(path, body, csrf);

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

document.getElementById("passkey").addEventListener("click", async () => {
  say("");
  try {
    const options = await post("/session/passkey/options", {});
    const answer = await usePasskey(options);
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
