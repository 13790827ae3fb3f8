// Checking a record's inclusion proof in the browser itself, not taking the node's word for it.
// The same steps as mftp.ledger.proofs.verify_record_in_ledger: the record's RFC 6962 leaf hash
// leads up the proof's path to the ledger root of a block header; that header's hash (SHA-256 of
// its canonical MessagePack form, mftp.crypto.canonical) is the block the certificate commits;
// the certificate's signers are validators of the set the header names, holding more than 2/3 of
// the power; and each precommit signature is a valid Ed25519 signature (WebCrypto, where the
// browser offers it: only in a secure context, https or localhost). Pure JavaScript otherwise,
// so the page works on a plain-http hospital network too; nothing is fetched from elsewhere.

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2]);

/** SHA-256 of bytes (pure JavaScript: crypto.subtle is missing outside secure contexts). */
export function sha256(data) {
  const length = data.length;
  const padded = new Uint8Array(((length + 9 + 63) >> 6) << 6);
  padded.set(data);
  padded[length] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 8, Math.floor(length / 0x20000000));
  view.setUint32(padded.length - 4, (length << 3) >>> 0);
  const h = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
  const w = new Uint32Array(64);
  const rotr = (x, n) => (x >>> n) | (x << (32 - n));
  for (let offset = 0; offset < padded.length; offset += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(offset + 4 * i);
    for (let i = 16; i < 64; i++) {
      const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
    }
    let [a, b, c, d, e, f, g, k] = h;
    for (let i = 0; i < 64; i++) {
      const t1 = (k + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) >>> 0;
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
      k = g; g = f; f = e; e = (d + t1) >>> 0; d = c; c = b; b = a; a = (t1 + t2) >>> 0;
    }
    [a, b, c, d, e, f, g, k].forEach((x, i) => { h[i] = (h[i] + x) >>> 0; });
  }
  const out = new Uint8Array(32);
  const outView = new DataView(out.buffer);
  h.forEach((x, i) => outView.setUint32(4 * i, x));
  return out;
}

export const fromHex = (text) => Uint8Array.from((text.match(/../g) || []).map((b) => parseInt(b, 16)));
export const toHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
};
const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

/** Bytes for the canonical encoder (a hex string from the API is otherwise a str). */
export class Bin { constructor(bytes) { this.bytes = bytes; } }

function head(small, base, codes, n) {
  if (n < small) return [base | n];
  const [c8, c16, c32] = codes;
  if (c8 !== null && n < 0x100) return [c8, n];
  if (n < 0x10000) return [c16, n >> 8, n & 0xff];
  return [c32, (n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
}

function int(n) {
  if (n >= 0) {
    if (n < 0x80) return [n];
    if (n < 0x100) return [0xcc, n];
    if (n < 0x10000) return [0xcd, n >> 8, n & 0xff];
    if (n < 0x100000000) return [0xce, (n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(n));
    return [0xcf, ...b];
  }
  if (n >= -32) return [n & 0xff];
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigInt64(0, BigInt(n));
  if (n >= -0x80) return [0xd0, b[7]];
  if (n >= -0x8000) return [0xd1, b[6], b[7]];
  if (n >= -0x80000000) return [0xd2, ...b.slice(4)];
  return [0xd3, ...b];
}

/** mftp.crypto.canonical.encode: MessagePack, maps sorted by their keys' UTF-8 bytes. */
export function encode(value) {
  const utf8 = new TextEncoder();
  const out = [];
  const walk = (v) => {
    if (v === null) out.push(0xc0);
    else if (v === true || v === false) out.push(v ? 0xc3 : 0xc2);
    else if (typeof v === "number") {
      if (!Number.isSafeInteger(v)) throw new Error("only integers are canonical");
      out.push(...int(v));
    } else if (typeof v === "string") {
      const b = utf8.encode(v);
      out.push(...head(32, 0xa0, [0xd9, 0xda, 0xdb], b.length), ...b);
    } else if (v instanceof Bin) {
      out.push(...head(0, 0, [0xc4, 0xc5, 0xc6], v.bytes.length), ...v.bytes);
    } else if (Array.isArray(v)) {
      out.push(...head(16, 0x90, [null, 0xdc, 0xdd], v.length));
      v.forEach(walk);
    } else {
      const keys = Object.keys(v).map((k) => [utf8.encode(k), k]).sort(([a], [b]) => {
        for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
        return a.length - b.length;
      });
      out.push(...head(16, 0x80, [null, 0xde, 0xdf], keys.length));
      for (const [, k] of keys) { walk(k); walk(v[k]); }
    }
  };
  walk(value);
  return Uint8Array.from(out);
}

const leafHash = (data) => sha256(concat([0], data));
const nodeHash = (left, right) => sha256(concat([1], left, right));

/** The root an RFC 9162 (2.1.3.2) inclusion proof leads to, or null if its shape is wrong. */
export function rootFromInclusion(leaf, index, size, path) {
  if (!(index >= 0 && index < size)) return null;
  let fn = index, sn = size - 1, node = leaf;
  for (const sibling of path) {
    if (sn === 0) return null;
    if (fn % 2 === 1 || fn === sn) {
      node = nodeHash(sibling, node);
      while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      node = nodeHash(node, sibling);
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  return sn === 0 ? node : null;
}

/** The block hash: SHA-256 of the header's canonical form (the API gives its bytes as hex). */
export function headerHash(h) {
  const bin = (hex) => new Bin(fromHex(hex));
  return sha256(encode({
    chain_id: h.chain_id, height: h.height, time_ms: h.time_ms, prev: bin(h.prev), proposer: bin(h.proposer),
    records_root: bin(h.records_root), record_count: h.record_count, ledger_size: h.ledger_size,
    ledger_root: bin(h.ledger_root), validators: bin(h.validators), last_commit: bin(h.last_commit),
  }));
}

/** The hash a header names for a validator set (``ValidatorSet.hash``). */
export function validatorsHash(validators) {
  const sorted = [...validators].sort((a, b) => (a.sign_key < b.sign_key ? -1 : a.sign_key > b.sign_key ? 1 : 0));
  return sha256(encode(sorted.map((v) => ({ name: v.name, key: new Bin(fromHex(v.sign_key)), power: v.power }))));
}

async function ed25519(key, message, signature) {
  if (!globalThis.crypto || !crypto.subtle) return null;  // not a secure context
  try {
    const imported = await crypto.subtle.importKey("raw", key, { name: "Ed25519" }, false, ["verify"]);
    return await crypto.subtle.verify({ name: "Ed25519" }, imported, signature, message);
  } catch {
    return null;  // no Ed25519 in this browser's WebCrypto
  }
}

/**
 * Check an answer of ``GET /proofs/inclusion/{id}`` against ``validators`` (of ``GET /validators``).
 * Returns ``{ok, checks: [[what, true|false|null]]}``: null where this browser could not check.
 */
export async function verifyInclusion(answer, validators) {
  const checks = [];
  const check = (what, result) => { checks.push([what, result]); return result; };
  const record = Uint8Array.from(atob(answer.record_bytes), (c) => c.charCodeAt(0));
  const header = answer.header;
  const cert = answer.certificate;
  const path = answer.path.map(fromHex);
  check("the proven bytes carry this record's id", toHex(record).includes(answer.record.id));
  check(`the proof is for the ${header.ledger_size} records of block ${header.height}'s ledger`,
    answer.ledger_size === header.ledger_size);
  const root = rootFromInclusion(leafHash(record), answer.ledger_index, answer.ledger_size, path);
  check(`the record's leaf hash leads up ${path.length} Merkle steps to that block's ledger root`,
    root !== null && equal(root, fromHex(header.ledger_root)));
  const hash = headerHash(header);
  check("the block header hashes to the block the certificate commits",
    equal(hash, fromHex(header.hash)) && cert.block_hash === header.hash && cert.height === header.height);
  const sameSet = equal(validatorsHash(validators), fromHex(header.validators));
  check("the block names the validator set this node knows", sameSet);
  const byKey = new Map(validators.map((v) => [v.sign_key, v]));
  const signers = cert.signatures.map((s) => s.validator);
  const total = validators.reduce((n, v) => n + v.power, 0);
  const power = signers.reduce((n, k) => n + (byKey.get(k)?.power || 0), 0);
  check(`its signers are validators holding more than 2/3 of the power (${power} of ${total})`,
    sameSet && signers.every((k) => byKey.has(k)) && new Set(signers).size === signers.length && power * 3 > total * 2);
  // What each validator signed: mftp.ledger.block.vote_sign_bytes under the domain "vote".
  const vote = encode({ chain_id: header.chain_id, type: 2, height: cert.height, round: cert.round, block: new Bin(fromHex(cert.block_hash)) });
  const message = concat(new TextEncoder().encode("MFTP-SIG-v1\0"), [4], new TextEncoder().encode("vote"), vote);
  const results = await Promise.all(cert.signatures.map((s) => ed25519(fromHex(s.validator), message, fromHex(s.signature))));
  check("each precommit signature is valid (Ed25519)",
    results.includes(null) ? null : results.every((r) => r === true));
  const ok = checks.every(([, r]) => r !== false);
  return { ok, complete: ok && checks.every(([, r]) => r === true), checks };
}
