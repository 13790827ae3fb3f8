// A transfer's history: its ledger records, each with its inclusion proof verified by the node.
import { api, el, say, start, table, time } from "./app.js";

await start("history.html");
const id = new URLSearchParams(location.search).get("transfer") || "";
const where = document.getElementById("history");

async function load() {
  if (!/^[0-9a-f]{32}$/.test(id)) { say("No transfer named: open a history from the inbox or outbox."); return; }
  try {
    const { records } = await api("GET", `/transfers/${id}/history`);
    const rows = records.map((r) => [
      time(r.time_ms), r.action || r.type, r.institution || "",
      r.user || (r.ours ? "" : el("span", { class: "muted" }, "(another institution's user)")), r.purpose || "",
      r.committed ? `block ${r.height}` : "not yet committed",
      el("span", { class: r.verified ? "verified" : "unverified" }, r.verified ? "✓ proof verified" : `✗ ${r.problem || "not verified"}`),
      el("code", {}, r.id)]);
    where.replaceChildren(table(`Transfer ${id}`, ["When", "What", "Institution", "User", "Purpose", "Ledger", "Proof", "Record"], rows));
  } catch (error) {
    say(error.message);
  }
}
await load();
setInterval(load, 5000);
