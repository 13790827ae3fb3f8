// The operator's overview: GET /overview every 2 s; a peer, PACS or figure that is wrong turns red.
import { api, bytes, el, say, start, table, time } from "./app.js";

const POLL_MS = 2000;
await start("overview.html");

function figure(label, value, bad = false) {
  return el("li", { class: bad ? "alert-error" : "" }, label, el("span", { class: "value" }, value));
}

async function refresh() {
  try {
    const o = await api("GET", "/overview");
    say("");
    const bad = new Set(o.alerts.map((a) => a.what));
    document.getElementById("alerts").replaceChildren(...(o.alerts.length
      ? o.alerts.map((a) => el("li", { class: `alert-${a.level}` }, `${a.level === "error" ? "✗" : "!"} ${a.message}`))
      : [el("li", { class: "ok" }, "✓ Nothing wrong")]));
    const signed = o.participation.filter((p) => p.signed).length;
    document.getElementById("figures").replaceChildren(
      figure("Node", `${o.name} (${o.role})`),
      figure("Ledger height", o.height, bad.has("ledger")),
      figure("Last block", time(o.last_block_ms), bad.has("ledger")),
      figure("Signed recent blocks", `${signed} of ${o.participation.length}`, bad.has("participation")),
      figure("Peers connected", `${o.peers_connected} of ${o.peers.length}`, o.peers_connected < o.peers.length),
      figure("Sync", o.sync.state || "", bad.has("sync")),
      figure("Free disk", bytes(o.disk.free_bytes), bad.has("disk")),
      figure("Mempool", o.queues.mempool_records),
      figure("Sending / receiving", `${o.queues.sending} / ${o.queues.receiving}`),
      figure("Failed transfers", o.queues.failed, o.queues.failed > 0),
      figure("Records in the ledger", o.metrics.mftp_ledger_records ?? ""),
      figure("Committed records", o.metrics.mftp_records_committed_total ?? ""));
    document.getElementById("peers").replaceChildren(table("Members of the consortium", ["Peer", "Connection", "Key"],
      o.peers.map((p) => [
        el("span", { class: "peer-name" }, p.name),
        el("span", { class: `peer-state ${p.connected ? "connected" : "disconnected"}`, "data-peer": p.name },
          p.connected ? "● connected" : "✗ not connected"),
        el("code", {}, p.sign_key.slice(0, 16))])));
    document.getElementById("participation").replaceChildren(table("This node's signature on each certificate",
      ["Height", "Signed", "Signers"], o.participation.slice().reverse().slice(0, 10).map((p) => [
        p.height, el("span", { class: p.signed ? "ok" : "error" }, p.signed ? "yes" : "no"), p.signers])));
    document.getElementById("pacs").replaceChildren(o.pacs.length
      ? table("Configured PACS", ["PACS", "Reachable"], o.pacs.map((p) => [p.pacs,
        el("span", { class: p.reachable ? "connected" : "disconnected" }, p.reachable ? "yes" : "no")]))
      : el("p", { class: "muted" }, "No PACS server configured by address."));
  } catch (error) {
    say(`Could not read the overview: ${error.message}`);
  }
  setTimeout(refresh, POLL_MS);
}
refresh();
