// Enrolment from the operator's one-time code: password, the authenticator's QR, recovery codes once.
import { el, home, postStep, say } from "./app.js";

let csrf = "";
const post = (path, body) => postStep(path, body, csrf);

document.getElementById("start").addEventListener("submit", async (event) => {
  event.preventDefault();
  say("");
  try {
    const started = await post("/enrolment", {
      name: document.getElementById("name").value.trim(),
      code: document.getElementById("onetime").value.trim(),
      password: document.getElementById("password").value,
    });
    csrf = started.csrf_token;
    // The SVG is shown as an image: a script inside it could not run.
    document.getElementById("qr").src = "data:image/svg+xml;base64," + btoa(started.totp_qr_svg);
    document.getElementById("secret").textContent = new URL(started.totp_uri).searchParams.get("secret") || "";
    document.getElementById("start").hidden = true;
    document.getElementById("confirm").hidden = false;
    document.getElementById("code").focus();
  } catch (error) {
    say(error.message);
  }
});

document.getElementById("confirm").addEventListener("submit", async (event) => {
  event.preventDefault();
  say("");
  try {
    const done = await post("/enrolment/confirm", { code: document.getElementById("code").value.trim() });
    document.getElementById("codes").replaceChildren(...done.recovery_codes.map((c) => el("li", {}, c)));
    document.getElementById("confirm").hidden = true;
    document.getElementById("done").hidden = false;
    const session = await fetch("/session", { credentials: "same-origin" }).then((a) => (a.ok ? a.json() : null));
    if (session && session.roles) document.getElementById("continue").href = "/console/" + home(session.roles);
    document.getElementById("codes-title").focus();
  } catch (error) {
    say(error.message);
  }
});
