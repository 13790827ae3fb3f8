// The ledger explorer: the latest blocks with their certificates, one block's records, one record
// with its inclusion proof checked here (proof.js), and the validators. The page's place is in its
// address (?block=h, ?record=id), so the browser's back button and links work.
import { api, el, say, start, table, time } from "./app.js";
import { verifyInclusion } from "./proof.js";

await start("explorer.html");
const view = document.getElementById("view");
const params = new URLSearchParams(location.search);
const short = (hex) => el("code", { title: hex }, hex.slice(0, 16) + "…");
let validators = null;

async function knownValidators() {
  validators = validators || await api("GET", "/validators");
  return validators;
}

function nameOf(key, set) {
  const found = set.validators.find((v) => v.sign_key === key);
  return found ? found.name : `${key.slice(0, 12)}… (not a current validator)`;
}

function signersOf(cert, set) {
  if (!cert) return el("span", { class: "muted" }, "not yet certified");
  return `${cert.signatures.length} of ${set.validators.length} validators (round ${cert.round})`;
}

const heading = (text) => el("h2", { tabindex: "-1" }, text);

async function showBlocks(from) {
  const set = await knownValidators();
  const query = from ? `/blocks?from=${from}&to=${from + 9}` : "/blocks";
  const { head, blocks } = await api("GET", query);
  const first = blocks.length ? blocks[0].height : 1;
  const rows = blocks.slice().reverse().map((b) => [
    el("a", { href: `explorer.html?block=${b.height}`, "aria-label": `Block ${b.height}` }, String(b.height)),
    time(b.header.time_ms), b.header.record_count, nameOf(b.header.proposer, set),
    signersOf(b.certificate, set), short(b.header.hash)]);
  const nav = el("div", { class: "buttons" });
  if (first > 1) nav.append(el("a", { href: `explorer.html?from=${Math.max(1, first - 10)}` }, "Earlier blocks"));
  if (blocks.length && blocks[blocks.length - 1].height < head) {
    nav.append(el("a", { href: `explorer.html?from=${blocks[blocks.length - 1].height + 1}` }, "Later blocks"));
  }
  view.replaceChildren(
    heading(`Blocks (head: ${head})`),
    table("Latest blocks and their commit certificates", ["Height", "Time", "Records", "Proposer", "Certificate", "Hash"], rows),
    nav, validatorsSection(set));
}

function validatorsSection(set) {
  return el("section", { "aria-labelledby": "validators-title" },
    el("h2", { id: "validators-title" }, `Validators (voting on height ${set.height})`),
    table("Validator set", ["Name", "Power", "Key"], set.validators.map((v) => [v.name, v.power, el("code", {}, v.sign_key)])),
    set.audit_nodes.length
      ? table("Audit nodes", ["Name", "Key"], set.audit_nodes.map((a) => [a.name, el("code", {}, a.sign_key)]))
      : el("p", { class: "muted" }, "No audit node."));
}

async function showBlock(height) {
  const set = await knownValidators();
  const b = await api("GET", `/blocks/${height}`);
  const h = b.header;
  const cert = b.certificate;
  const facts = el("dl", { class: "facts" },
    ...[["Time", time(h.time_ms)], ["Proposer", nameOf(h.proposer, set)], ["Records", h.record_count],
      ["Ledger size", h.ledger_size], ["Hash", el("code", {}, h.hash)], ["Previous block", el("code", {}, h.prev)],
      ["Ledger root", el("code", {}, h.ledger_root)], ["Records root", el("code", {}, h.records_root)],
      ["Chain", h.chain_id]].flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const signatures = cert
    ? table(`Certificate: ${signersOf(cert, set)}`, ["Validator", "Signature"],
      cert.signatures.map((s) => [nameOf(s.validator, set), short(s.signature)]))
    : el("p", { class: "muted" }, "This block is not yet certified.");
  const records = b.records.map((r) => [
    el("a", { href: `explorer.html?record=${r.id}`, "aria-label": `Record ${r.id.slice(0, 8)}` }, el("code", {}, r.id)),
    r.type, time(r.time_ms), nameOf(r.author, set) ]);
  const nav = el("div", { class: "buttons" },
    height > 1 ? el("a", { href: `explorer.html?block=${height - 1}` }, "Previous block") : "",
    el("a", { href: `explorer.html?block=${height + 1}` }, "Next block"),
    el("a", { href: "explorer.html" }, "Latest blocks"));
  view.replaceChildren(heading(`Block ${height}`), facts, signatures,
    b.records.length ? table(`Records of block ${height}`, ["Record", "Type", "Time", "Author"], records)
      : el("p", { class: "muted" }, "No records in this block."), nav);
  document.title = `Block ${height} — MFTP console`;
}

async function showRecord(id) {
  const set = await knownValidators();
  const answer = await api("GET", `/proofs/inclusion/${id}`);
  const r = answer.record;
  const result = await verifyInclusion(answer, set.validators);
  const verdict = result.complete
    ? el("p", { class: "verified", id: "verdict" }, "✓ Inclusion proof verified in this browser")
    : result.ok
      ? el("p", { class: "warning", id: "verdict" }, "✓ Inclusion proof verified in this browser, except what it could not check (below)")
      : el("p", { class: "unverified", id: "verdict" }, "✗ The inclusion proof does not hold");
  const checks = el("ul", { class: "checks", "aria-label": "What was checked" }, result.checks.map(([what, ok]) =>
    el("li", { class: ok === true ? "verified" : ok === false ? "unverified" : "muted" },
      `${ok === true ? "✓" : ok === false ? "✗" : "–"} ${what}${ok === null ? " (not checked: this browser has no Ed25519 outside https or localhost)" : ""}`)));
  const facts = el("dl", { class: "facts" },
    ...[["Type", r.type], ["Time", time(r.time_ms)], ["Author", nameOf(r.author, set)],
      ["Block", el("a", { href: `explorer.html?block=${r.height}` }, String(r.height))],
      ["Position", `${r.index_in_block} in its block, ${r.ledger_index} in the ledger`],
      ["Pseudonymous tags", r.tags.length], ["Sealed envelope", `${r.envelope_bytes} bytes`],
      ["Body", el("code", {}, JSON.stringify(r.body))]].flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  view.replaceChildren(heading(`Record ${r.id}`), verdict, checks,
    el("p", { class: "muted" }, `Proven against block ${answer.header.height}, the head when asked; the record's own signature is checked by every validator before it enters a block.`),
    facts);
  document.title = `Record ${r.id.slice(0, 8)} — MFTP console`;
}

document.getElementById("find").addEventListener("submit", (event) => {
  event.preventDefault();
  const q = document.getElementById("query").value.trim().toLowerCase();
  if (/^[0-9]{1,12}$/.test(q)) location.assign(`explorer.html?block=${q}`);
  else if (/^[0-9a-f]{32}$/.test(q)) location.assign(`explorer.html?record=${q}`);
  else say("Give a block height or a record id of 32 hex digits.");
});

try {
  const block = params.get("block") || "";
  const record = (params.get("record") || "").toLowerCase();
  const from = params.get("from") || "";
  if (/^[0-9]{1,12}$/.test(block)) await showBlock(Number(block));
  else if (/^[0-9a-f]{32}$/.test(record)) await showRecord(record);
  else await showBlocks(/^[0-9]{1,12}$/.test(from) ? Number(from) : 0);
  if (block || record || from) view.querySelector("h2")?.focus();  // followed a link: start at what it opened
} catch (error) {
  say(error.message);
}
