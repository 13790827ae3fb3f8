// Send: find a study (QIDO-RS, C-FIND or a folder), choose recipient, purpose and mode, follow it.
import { api, bytes, el, say, start, table } from "./app.js";
import { outcome, progress } from "./transfers.js";

const POLL_MS = 1500;
const session = await start("send.html");
void session;
const sourceSelect = document.getElementById("source");
const sendForm = document.getElementById("send");
let chosen = "";

const [{ sources }, { peers }, status] = await Promise.all([
  api("GET", "/pacs/sources"), api("GET", "/peers"), api("GET", "/status")]);
sourceSelect.replaceChildren(...sources.map((s) => el("option", { value: s.source }, `${s.kind}: ${s.source.replace(/^[a-z]+:/, "")}`)));
document.getElementById("to").replaceChildren(
  ...peers.filter((p) => p.name !== status.name).map((p) => el("option", { value: p.name }, p.name)));

function choose(source) {
  chosen = source;
  document.getElementById("chosen").textContent = source;
  sendForm.hidden = false;
  document.getElementById("to").focus();
}

document.getElementById("search").addEventListener("submit", async (event) => {
  event.preventDefault();
  say("");
  const body = { source: sourceSelect.value };
  for (const key of ["patient_id", "accession", "study_uid"]) {
    const value = document.getElementById(key).value.trim();
    if (value) body[key] = value;
  }
  const results = document.getElementById("results");
  results.replaceChildren(el("p", { class: "muted" }, "Searching…"));
  try {
    const { studies } = await api("POST", "/pacs/search", body);
    const rows = studies.map((s) => [
      s.study_date || s.name || "", s.accession || "", (s.modalities || []).join(", "), s.instances ?? "",
      el("code", {}, s.study_uid || s.source),
      el("button", { type: "button", class: "choose", onclick: () => choose(s.source) }, "Choose")]);
    results.replaceChildren(studies.length
      ? table(`${studies.length} studies found`, ["Date or folder", "Accession", "Modalities", "Instances", "Study", ""], rows)
      : el("p", {}, "No study matches."));
  } catch (error) {
    results.replaceChildren();
    say(`Search failed: ${error.message}`);
  }
});

sendForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  say("");
  const body = {
    source: chosen, to: document.getElementById("to").value,
    purpose: document.getElementById("purpose").value, mode: document.getElementById("mode").value,
  };
  const toUser = document.getElementById("to_user").value.trim();
  if (toUser) body.to_user = toUser;
  try {
    const { transfer_id } = await api("POST", "/transfers", body);
    follow(transfer_id);
  } catch (error) {
    say(`Not sent: ${error.message}`);
  }
});

function follow(id) {
  const line = el("p", { class: "state", id: "send-state" });
  const bar = el("progress", { max: 1, value: 0, "aria-label": "progress" });
  document.getElementById("follow").replaceChildren(
    el("h2", {}, "Progress"), bar, line,
    el("p", {}, el("a", { href: "inbox.html" }, "Outbox"), " · ", el("a", { href: `history.html?transfer=${id}` }, "History")));
  const tick = async () => {
    try {
      const t = await api("GET", `/transfers/${id}`);
      const [done, total, text] = progress(t);
      if (total) { bar.max = total; bar.value = done; }
      line.textContent = `${t.peer}: ${outcome(t)} ${text ? `(${text}, ${bytes(t.study_bytes)})` : ""}`;
      line.className = `state state-${t.state}`;
      if (["delivered", "refused", "failed", "cancelled"].includes(t.state)) return;
    } catch (error) {
      line.textContent = error.message;
    }
    setTimeout(tick, POLL_MS);
  };
  tick();
}
