// The regulator's page: grants received, a scan with proofs and disclosed details, a subject's
// timeline, and downloads (FHIR AuditEvent, DICOM audit messages, CSV, the signed bundle).
import { api, download, el, say, start, table, time } from "./app.js";

await start("audit.html");
const scanArea = document.getElementById("scan");
// A grant epoch is a calendar month counted from January 1970.
const month = (e) => `${1970 + Math.floor(e / 12)}-${String((e % 12) + 1).padStart(2, "0")}`;

function csv(view) {
  const quote = (v) => `"${String(v ?? "").replace(/"/g, '""')}"`;
  const fields = ["time", "type", "author", "roles", "record_id", "ledger_index", "proof_verified", "user", "patient", "study", "purpose", "recipient", "outcome"];
  const rows = view.matches.map((m) => [m.time, m.type, m.author, m.roles.join(" "), m.record_id, m.ledger_index,
    m.proof.verified, m.disclosed.user, m.disclosed.patient, m.disclosed.study, m.body.purpose ?? m.disclosed.purpose,
    m.body.recipient ?? m.disclosed.recipient, m.disclosed.outcome ?? m.body.outcome]);
  return [fields, ...rows].map((r) => r.map(quote).join(",")).join("\r\n") + "\r\n";
}

async function scan(grant) {
  say("Scanning the chain…", "muted");
  scanArea.replaceChildren();
  try {
    const view = await api("POST", "/audit/scans", { grant_id: grant.grant_id });
    say("");
    const details = (d) => Object.entries(d).map(([k, v]) => `${k}: ${v}`).join("; ");
    const rows = view.matches.map((m) => [time(m.time_ms), m.type.replace(/_/g, " "), m.author, m.roles.join(", "),
      details(m.disclosed), el("span", { class: m.proof.verified ? "verified" : "unverified" },
        m.proof.verified ? `✓ in ledger at ${m.ledger_index}` : "✗"), el("code", {}, m.record_id)]);
    const id = grant.grant_id.slice(0, 8);
    scanArea.replaceChildren(
      el("h2", { id: "scan-title", tabindex: "-1" }, `Scan of ${view.subject}`),
      el("p", { class: "statement" }, view.statement),
      el("div", { class: "buttons", role: "group", "aria-label": "Downloads" },
        el("button", { type: "button", onclick: async () => download(`audit-${id}-fhir.json`, await api("POST", "/audit/scans", { grant_id: grant.grant_id, format: "fhir" })) }, "FHIR AuditEvent"),
        el("button", { type: "button", onclick: async () => download(`audit-${id}-dicom.json`, await api("POST", "/audit/scans", { grant_id: grant.grant_id, format: "dicom" })) }, "DICOM audit messages"),
        el("button", { type: "button", onclick: () => download(`audit-${id}.csv`, csv(view), "text/csv") }, "CSV"),
        el("button", { type: "button", onclick: async () => download(`audit-${id}-bundle.json`, await api("POST", "/audit/bundles", { grant_id: grant.grant_id })) }, "Signed bundle")),
      el("h3", {}, "Timeline"),
      table(`${view.match_count} records of ${view.subject}, oldest first`, ["When", "What", "Institution", "Role of the subject", "Disclosed details", "Proof", "Record"], rows),
      view.notes.length ? el("ul", { class: "warning" }, view.notes.map((n) => el("li", {}, n))) : "");
    document.getElementById("scan-title").focus();
  } catch (error) {
    say(`Scan failed: ${error.message}`);
  }
}

try {
  const { grants } = await api("GET", "/audit/grants/received");
  document.getElementById("grants").replaceChildren(grants.length
    ? table("Newest first", ["Granted", "By", "Subject", "Purpose", "Legal basis", "Months", "Expires", ""],
      grants.map((g) => g.problem ? [el("code", {}, g.grant_id), el("span", { class: "error" }, g.problem), "", "", "", "", "", ""] : [
        time(g.granted_ms), g.institution, g.subject, g.purpose, g.legal_basis, `${month(g.epochs[0])} to ${month(g.epochs[1])}`, time(g.expires_ms),
        el("button", { type: "button", class: "scan", onclick: () => scan(g) }, "Scan")]))
    : el("p", {}, "No grant has been addressed to this node."));
} catch (error) {
  say(error.message);
}
