// One transfer as a table row, updated in place (focus and open dialogs survive each poll).
import { api, bytes, el, say, time } from "./app.js";

/** Progress of a transfer as [done, total, text]. */
export function progress(t) {
  if (t.direction === "in" && t.fetch_bytes) return [t.fetched_bytes, t.fetch_bytes, `${bytes(t.fetched_bytes)} of ${bytes(t.fetch_bytes)}`];
  if (t.files) return [t.files_done, t.files, `${t.files_done} of ${t.files} files`];
  return [0, 0, ""];
}

/** What the state cell says: the state, and why a transfer failed or was refused. */
export function outcome(t) {
  return t.detail && ["failed", "refused", "cancelled"].includes(t.state) ? `${t.state}: ${t.detail}` : t.state;
}

async function openStudy(t, target) {
  say("");
  try {
    const view = await api("POST", `/transfers/${t.transfer_id}/views`, { purpose: t.purpose });
    const study = await api("GET", `/transfers/${t.transfer_id}/views/${view.view_id}/study`);
    const viewer = `/ohif/viewer?StudyInstanceUIDs=${encodeURIComponent(study.study_uid)}`;
    target.replaceChildren(
      el("h2", { tabindex: "-1", id: "opened-title" }, "Study opened"),
      el("p", {}, `${view.instances.length} instances; the access is recorded on the ledger (record `,
        el("code", {}, view.record), "). "),
      el("p", {}, el("a", { href: viewer, target: "_blank", rel: "noopener" }, "Open it in the viewer"), " · ",
        el("a", { href: `history.html?transfer=${t.transfer_id}` }, "See its history")));
    document.getElementById("opened-title").focus();
  } catch (error) {
    say(`Could not open the study: ${error.message}`);
  }
}

async function exportStudy(t) {
  const destination = window.prompt("Export to (a folder path, a DICOMweb URL or dimse:AET@host:port):");
  if (!destination) return;
  say("Exporting…", "muted");
  try {
    const job = await api("POST", `/transfers/${t.transfer_id}/export?wait_ms=20000`, { destination, purpose: t.purpose });
    say(`Export ${job.state}: ${job.files_done ?? ""}${job.files ? ` of ${job.files} files` : ""}`, job.state === "done" ? "ok" : "muted");
  } catch (error) {
    say(`Export refused: ${error.message}`);
  }
}

async function cancel(t) {
  const what = t.direction === "in" ? "Stop fetching this study? What was fetched is deleted and the sender is told."
    : "Cancel this transfer? The recipient can no longer fetch it (unless it already has all of it).";
  if (!window.confirm(what)) return;
  say("");
  try {
    await api("POST", `/transfers/${t.transfer_id}/cancel`);
    say("Transfer cancelled.", "ok");
  } catch (error) {
    say(`Not cancelled: ${error.message}`);
  }
}

async function resend(t) {
  say("");
  try {
    const { transfer_id } = await api("POST", `/transfers/${t.transfer_id}/resend`);
    say(`Sent again to ${t.peer}: a new transfer (${transfer_id.slice(0, 8)}) in the outbox.`, "ok");
  } catch (error) {
    say(`Not sent again: ${error.message}`);
  }
}

const SENDING = ["preparing", "offered", "accepted"];
const SENT_ENDED = ["delivered", "refused", "failed", "cancelled"];

function actions(t, opened) {
  const short = t.transfer_id.slice(0, 8);
  const links = [el("a", { href: `history.html?transfer=${t.transfer_id}`, "aria-label": `History of transfer ${short}` }, "History")];
  const button = (text, cls, onclick) => el("button", { type: "button", class: cls, onclick, "aria-label": `${text} transfer ${short}` }, text);
  if (t.direction === "in" && t.state === "complete") {
    links.push(" ", el("button", { type: "button", class: "open", onclick: () => openStudy(t, opened) }, "Open"));
    links.push(" ", el("button", { type: "button", class: "secondary export", onclick: () => exportStudy(t) }, "Export"));
  }
  if ((t.direction === "out" && SENDING.includes(t.state)) || (t.direction === "in" && t.state === "fetching")) {
    links.push(" ", button("Cancel", "secondary cancel", () => cancel(t)));
  }
  if (t.direction === "out" && SENT_ENDED.includes(t.state)) links.push(" ", button("Resend", "secondary resend", () => resend(t)));
  return links;
}

/** Insert or update the row of ``t`` in ``tbody``. */
export function upsert(tbody, t, opened) {
  let row = tbody.querySelector(`tr[data-transfer="${t.transfer_id}"]`);
  if (!row) {
    row = el("tr", { "data-transfer": t.transfer_id },
      el("td", {}, time(t.created_ms)), el("td", { class: "peer" }, t.peer), el("td", {}, t.purpose),
      el("td", {}, t.mode), el("td", { class: "size" }), el("td", { class: "progress" }),
      el("td", { class: "state", "aria-live": "polite" }), el("td", { class: "actions" }));
    tbody.prepend(row);
  }
  const [done, total, text] = progress(t);
  row.querySelector(".size").textContent = bytes(t.study_bytes || t.fetch_bytes);
  row.querySelector(".progress").replaceChildren(
    total ? el("progress", { max: total, value: done, "aria-label": text }) : "", " ", text);
  const state = row.querySelector(".state");
  if (state.dataset.state !== t.state) {
    state.dataset.state = t.state;
    row.querySelector(".actions").replaceChildren(...actions(t, opened));
  }
  state.className = `state state-${t.state}`;
  state.textContent = outcome(t);
  return row;
}
