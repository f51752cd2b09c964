// The ledger's audit, re-done in the browser (WebCrypto SHA-256 and Ed25519), the same checks in the same
// order as consortium.ledger.audit: chain links and hashes (sealed entries through their commitment, so
// redacted ones verify too), the hub's and the organisations' signatures with keys learned from the ledger
// itself, and the Merkle root (RFC 6962) at every signed checkpoint, with its cosignatures. No eval, no
// inline code: the page's Content-Security-Policy allows only scripts from the hub.
"use strict";

const CLedger = (() => {
  const GENESIS = "0".repeat(64);
  const enc = new TextEncoder();

  // JSON with every number kept as the text the hub wrote (Python's repr), so that re-encoding a payload
  // gives back the very bytes the hub hashed.
  class Num { constructor(text) { this.text = text; } valueOf() { return Number(this.text); } }

  function parse(text) {
    let i = 0;
    const fail = (what) => { throw new Error(`bad JSON at ${i}: ${what}`); };
    const ws = () => { while (" \t\n\r".includes(text[i]) && i < text.length) i++; };
    function value() {
      ws();
      const c = text[i];
      if (c === "{") {
        i++; const out = {}; ws();
        if (text[i] === "}") { i++; return out; }
        for (;;) {
          ws(); if (text[i] !== '"') fail("key");
          const key = string(); ws();
          if (text[i++] !== ":") fail(":");
          if (Object.prototype.hasOwnProperty.call(out, key)) fail("duplicate key");
          out[key] = value(); ws();
          if (text[i] === ",") { i++; continue; }
          if (text[i++] === "}") return out;
          fail("object");
        }
      }
      if (c === "[") {
        i++; const out = []; ws();
        if (text[i] === "]") { i++; return out; }
        for (;;) {
          out.push(value()); ws();
          if (text[i] === ",") { i++; continue; }
          if (text[i++] === "]") return out;
          fail("array");
        }
      }
      if (c === '"') return string();
      for (const [word, val] of [["true", true], ["false", false], ["null", null]]) {
        if (text.startsWith(word, i)) { i += word.length; return val; }
      }
      const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 400));
      if (!m) fail("value");
      i += m[0].length;
      return new Num(m[0]);
    }
    function string() {
      const start = i++;
      while (i < text.length && text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
      i++;
      return JSON.parse(text.slice(start, i));
    }
    const out = value(); ws();
    if (i !== text.length) fail("trailing text");
    return out;
  }

  const codePoints = (s) => Array.from(s, (ch) => ch.codePointAt(0));
  function byCodePoint(a, b) {
    const x = codePoints(a), y = codePoints(b);
    for (let k = 0; k < Math.min(x.length, y.length); k++) if (x[k] !== y[k]) return x[k] - y[k];
    return x.length - y.length;
  }

  // consortium.crypto.canonical_json: sorted keys, no whitespace, UTF-8 as is.
  function canonical(v) {
    if (v === null) return "null";
    if (v === true) return "true";
    if (v === false) return "false";
    if (v instanceof Num) return v.text;
    if (typeof v === "number") {
      if (!Number.isSafeInteger(v)) throw new Error("only whole numbers may be written from scratch");
      return String(v);
    }
    if (typeof v === "string") return JSON.stringify(v);
    if (Array.isArray(v)) return "[" + v.map(canonical).join(",") + "]";
    const keys = Object.keys(v).sort(byCodePoint);
    return "{" + keys.map((k) => JSON.stringify(k) + ":" + canonical(v[k])).join(",") + "}";
  }

  const hex = (bytes) => Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
  function unhex(s) {
    if (typeof s !== "string" || !/^([0-9a-f]{2})*$/.test(s)) return null;
    return Uint8Array.from(s.match(/../g) || [], (h) => parseInt(h, 16));
  }
  function b64(s) {  // strict, like base64.b64decode(validate=True)
    if (typeof s !== "string" || s.length % 4 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) return null;
    try { return Uint8Array.from(atob(s), (c) => c.charCodeAt(0)); } catch (e) { return null; }
  }
  const concat = (...parts) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  };
  const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  const sha256hex = async (bytes) => hex(await sha256(bytes));
  const num = (v) => (v instanceof Num ? Number(v.text) : v);

  const publicKeys = new Map();
  async function verifySig(publicB64, message, signatureB64) {
    const raw = b64(publicB64), sig = b64(signatureB64);
    if (!raw || raw.length !== 32 || !sig || sig.length !== 64) return false;
    try {
      if (!publicKeys.has(publicB64)) {
        publicKeys.set(publicB64, await crypto.subtle.importKey("raw", raw, { name: "Ed25519" }, false, ["verify"]));
      }
      return await crypto.subtle.verify({ name: "Ed25519" }, publicKeys.get(publicB64), sig, message);
    } catch (e) { return false; }
  }
  async function keyId(publicB64) {
    const raw = b64(publicB64);
    if (!raw || raw.length !== 32) throw new Error("public key must be 32 raw bytes");
    return (await sha256hex(raw)).slice(0, 16);
  }

  // consortium.ledger.chain.expected_hash
  async function expectedHash(e) {
    const seq = num(e.seq);
    if (e.payload_commitment == null) {
      if (e.payload == null) throw new Error(`entry ${seq} has neither a payload nor a payload commitment`);
      if (e.actor_key_id != null) throw new Error(`entry ${seq} is a plain entry with an actor key: only sealed entries have one`);
      return sha256hex(enc.encode(canonical({ seq: e.seq, event_type: e.event_type, actor: e.actor,
        payload: e.payload, created_at: e.created_at, prev_hash: e.prev_hash })));
    }
    if (e.payload != null || e.salt != null) {
      if (e.payload == null || e.salt == null) throw new Error(`entry ${seq} reveals its payload or its salt without the other`);
      const salt = unhex(e.salt);
      if (!salt || salt.length !== 16) throw new Error(`entry ${seq}: salt must be 32 lower-case hex digits`);
      const revealed = await sha256hex(concat(salt, enc.encode(canonical(e.payload))));
      if (revealed !== e.payload_commitment) throw new Error(`payload of entry ${seq} does not match its commitment`);
    }
    const doc = { seq: e.seq, event_type: e.event_type, actor: e.actor, created_at: e.created_at,
      prev_hash: e.prev_hash, payload_commitment: e.payload_commitment };
    if (e.actor_key_id != null) doc.actor_key_id = e.actor_key_id;
    return sha256hex(enc.encode(canonical(doc)));
  }

  // consortium.ledger.signatures.SignatureChecker
  class Signatures {
    constructor() { this.hubKeys = new Map(); this.orgKeys = new Map(); this.firstSigned = null; }
    async announced(e) {
      const p = e.payload;
      if (p == null || typeof p !== "object") return `entry ${num(e.seq)} (${e.event_type}) announces a key but its payload is redacted`;
      try {
        if (typeof p.public_key !== "string" || (await keyId(p.public_key)) !== p.key_id) throw new Error("its key_id is not the id of its public_key");
      } catch (err) { return `entry ${num(e.seq)} (${e.event_type}) names a malformed key: ${err.message}`; }
      return [p.key_id, p.public_key];
    }
    async check(e) {
      const seq = num(e.seq);
      if (e.signature == null && e.signer_key_id == null) {
        if (this.firstSigned !== null) return `entry ${seq} is not signed, yet entry ${this.firstSigned} before it was`;
        if (e.actor_key_id != null || e.actor_signature != null) return `entry ${seq} has an actor signature but no hub signature`;
        return null;
      }
      if (typeof e.signature !== "string" || typeof e.signer_key_id !== "string") return `entry ${seq} has a signature without its key id, or a key id without its signature`;
      let announced = null;
      if (e.event_type === "hub.key") {
        announced = await this.announced(e);
        if (typeof announced === "string") return announced;
        if (!this.hubKeys.size && announced[0] !== e.signer_key_id) return `hub.key entry ${seq} is not signed by the key it announces`;
        if (this.hubKeys.size && !this.hubKeys.has(e.signer_key_id)) return `hub.key entry ${seq} announces a new hub key but is not signed by an announced one`;
        if (!this.hubKeys.size) this.hubKeys.set(...announced);
      }
      const hubKey = this.hubKeys.get(e.signer_key_id);
      if (hubKey === undefined) return `entry ${seq} is signed by hub key '${e.signer_key_id.slice(0, 16)}', which no hub.key entry before it announces`;
      if (!(await verifySig(hubKey, concat(enc.encode("consortium-ledger-entry/1\n"), enc.encode(e.hash)), e.signature))) return `the hub signature of entry ${seq} does not verify`;
      this.firstSigned = this.firstSigned || seq;
      if (announced && !this.hubKeys.has(announced[0])) this.hubKeys.set(...announced);
      const problem = (await this.actor(e)) || this.rotation(e);
      if (problem === null && ["node.enrolled", "org.key", "org.key_rotated"].includes(e.event_type)
          && e.payload && typeof e.payload === "object" && "public_key" in e.payload) {
        const org = await this.announced(e);
        if (typeof org === "string") return org;
        if (!this.orgKeys.has(org[0])) this.orgKeys.set(...org);
      }
      return problem;
    }
    rotation(e) {
      if (e.event_type !== "org.key_rotated" || !e.payload || typeof e.payload !== "object") return null;
      if (e.actor_key_id == null || e.actor_key_id !== e.payload.old_key_id) return `key rotation entry ${num(e.seq)} is not signed by the key it retires`;
      return null;
    }
    async actor(e) {
      const seq = num(e.seq);
      if (e.actor_key_id == null) return e.actor_signature != null ? `entry ${seq} has an actor signature but names no actor key` : null;
      if (e.payload == null) return e.actor_signature == null ? null : `entry ${seq} is redacted but keeps its actor signature`;
      if (e.actor_signature == null) return `entry ${seq} names actor key '${e.actor_key_id.slice(0, 16)}' but has no actor signature`;
      const orgKey = this.orgKeys.get(e.actor_key_id);
      if (orgKey === undefined) return `entry ${seq} is signed by org key '${e.actor_key_id.slice(0, 16)}', which no enrolment before it names`;
      const message = enc.encode("consortium-ledger-actor/1\n" + canonical({ event_type: e.event_type, payload: e.payload }));
      if (!(await verifySig(orgKey, message, e.actor_signature))) return `the actor signature of entry ${seq} does not verify`;
      return null;
    }
  }

  // consortium.ledger.merkle: RFC 6962 leaves and nodes, the growing tree's right edge.
  const leafHash = (data) => sha256(concat(Uint8Array.of(0), data));
  const nodeHash = (l, r) => sha256(concat(Uint8Array.of(1), l, r));
  class CompactRange {
    constructor() { this.size = 0; this.edge = []; }
    async append(leaf) {
      this.edge.push([0, leaf]);
      let level = 0;
      while (this.edge.length >= 2 && this.edge[this.edge.length - 2][0] === level) {
        const right = this.edge.pop()[1], left = this.edge.pop()[1];
        level += 1;
        this.edge.push([level, await nodeHash(left, right)]);
      }
      this.size += 1;
    }
    async root() {
      if (!this.edge.length) return sha256(new Uint8Array(0));
      let result = this.edge[this.edge.length - 1][1];
      for (let k = this.edge.length - 2; k >= 0; k--) result = await nodeHash(this.edge[k][1], result);
      return result;
    }
  }

  // RFC 9162 §2.1.3.2, as consortium.ledger.merkle.verify_inclusion.
  async function verifyInclusion(leaf, index, size, path, root) {
    if (!(index >= 0 && index < size)) return false;
    let fn = index, sn = size - 1, result = leaf;
    for (const sibling of path) {
      if (sn === 0) return false;
      if (fn & 1 || fn === sn) {
        result = await nodeHash(sibling, result);
        while (!(fn & 1) && fn !== 0) { fn >>= 1; sn >>= 1; }
      } else result = await nodeHash(result, sibling);
      fn >>= 1; sn >>= 1;
    }
    return sn === 0 && hex(result) === hex(root);
  }

  function note(cp) {
    const ok = /^[0-9a-f]{32}$/.test(cp.origin) && Number.isSafeInteger(num(cp.size)) && num(cp.size) >= 0
      && /^[0-9a-f]{64}$/.test(cp.root) && typeof cp.created_at === "string" && cp.created_at
      && !/[\r\n]/.test(cp.created_at) && cp.created_at.length <= 40;
    if (!ok) return null;
    return enc.encode(`consortium-ledger-checkpoint/1\norigin ${cp.origin}\nsize ${num(cp.size)}\nroot ${cp.root}\ntime ${cp.created_at}\n`);
  }

  class Problem extends Error {
    constructor(reason, seq = null, checkpoint = null) { super(reason); this.seq = seq; this.checkpoint = checkpoint; }
  }

  function missing(first, last, before) {
    const what = first === last ? `entry ${first} is missing` : `entries ${first}–${last} are missing`;
    if (first > 1) return `${what}: the chain was cut after entry ${first - 1}`;
    if (before !== null) return `${what}: every entry before entry ${before} was cut`;
    return `${what}: every entry was cut`;
  }

  // consortium.ledger.audit.audit over an async iterable of entries, the head read before them and the
  // checkpoints; the report names the first problem in ledger order.
  async function audit(entries, head, checkpoints, progress = () => {}) {
    const keys = new Signatures(), tree = new CompactRange();
    const pending = checkpoints.filter((c) => num(c.size) > 0).sort((a, b) => num(b.size) - num(a.size));
    const matched = [];
    let prevSeq = 0, prevHash = GENESIS, hubId = null;
    let atHead = head !== null && num(head.seq) === 0 && head.hash === GENESIS;
    const report = async (ok, extra = {}) => ({ ok, checked: tree.size, firstBadSeq: null, badCheckpoint: null,
      reason: null, headHash: prevHash, checkpoints: matched.length, root: hex(await tree.root()), ...extra });
    try {
      for await (const e of entries) {
        const seq = num(e.seq);
        if (!Number.isInteger(seq)) throw new Problem(`entry after ${prevSeq} has a non-integer seq`, null);
        if (seq > prevSeq + 1 && e.prev_hash !== prevHash) {
          let reason = missing(prevSeq + 1, seq - 1, seq), intact = false;
          try { intact = typeof e.hash === "string" && (await expectedHash(e)) === e.hash; } catch (err) { intact = false; }
          if (!intact) reason += `; entry ${seq} after the gap does not match its content either`;
          throw new Problem(reason, prevSeq + 1);
        }
        if (seq !== prevSeq + 1) throw new Problem(`seq ${seq} follows ${prevSeq} (gap or reorder)`, seq);
        if (e.prev_hash !== prevHash) {
          throw new Problem(prevSeq === 0 ? `prev_hash of entry ${seq} is not the genesis hash`
            : `prev_hash of entry ${seq} does not match the hash of entry ${prevSeq}`, seq);
        }
        let recomputed;
        try { recomputed = await expectedHash(e); } catch (err) { throw new Problem(err.message, seq); }
        if (typeof e.hash !== "string" || recomputed !== e.hash) throw new Problem(`hash of entry ${seq} does not match its content`, seq);
        if (head !== null && seq === num(head.seq)) {
          if (e.hash !== head.hash) throw new Problem(`entry ${seq} is not the hub's head: its hash ${e.hash.slice(0, 16)}… differs from the head's ${head.hash.slice(0, 16)}… (the chain was rewritten up to here)`, seq);
          atHead = true;
        }
        const sigProblem = await keys.check(e);
        if (sigProblem !== null) throw new Problem(sigProblem, seq);
        if (e.event_type === "hub.created" && e.payload && typeof e.payload === "object" && hubId === null) hubId = e.payload.hub_id;
        await tree.append(await leafHash(unhex(e.hash)));
        prevSeq = seq; prevHash = e.hash;
        while (pending.length && num(pending[pending.length - 1].size) === tree.size) {
          const cp = pending.pop(), where = `checkpoint ${num(cp.size)}`;
          const root = hex(await tree.root());
          if (cp.root !== root) throw new Problem(`${where} has root ${String(cp.root).slice(0, 16)}… but the ledger's first ${num(cp.size)} entries have root ${root.slice(0, 16)}…: the ledger was rewritten after it was signed`, null, num(cp.size));
          const hubKey = keys.hubKeys.get(cp.key_id), message = note(cp);
          if (hubKey === undefined || message === null || !(await verifySig(hubKey, message, cp.signature))) throw new Problem(`${where} is not signed by a hub key the ledger announces`, null, num(cp.size));
          if (hubId !== null && cp.origin !== hubId) throw new Problem(`${where} names origin ${cp.origin}, the ledger's hub is ${hubId}`, null, num(cp.size));
          matched.push(cp);
        }
        if (tree.size % 500 === 0) progress(tree.size);
      }
      if (head !== null && !atHead) {
        if (prevSeq < num(head.seq)) throw new Problem(missing(prevSeq + 1, num(head.seq), null), prevSeq + 1);
        throw new Problem(`the hub's head (seq ${num(head.seq)}, hash ${String(head.hash).slice(0, 16)}…) is not a chain head`, null);
      }
      for (const cp of matched) {
        for (const co of cp.cosignatures || []) {
          const orgKey = keys.orgKeys.get(co.key_id);
          if (orgKey === undefined || !(await verifySig(orgKey, note(cp), co.signature))) throw new Problem(`checkpoint ${num(cp.size)}: the cosignature of ${co.org} does not verify with the org key the ledger names`, null, num(cp.size));
        }
      }
      if (pending.length) {
        const size = num(pending[pending.length - 1].size);
        return report(false, { firstBadSeq: tree.size + 1, badCheckpoint: size,
          reason: `checkpoint ${size} covers ${size} entries but the ledger has ${tree.size}: entries ${tree.size + 1}–${size} were cut` });
      }
      return report(true);
    } catch (err) {
      if (!(err instanceof Problem)) throw err;
      return report(false, { firstBadSeq: err.seq, badCheckpoint: err.checkpoint, reason: err.message });
    }
  }

  async function getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${url} answered ${response.status}`);
    return parse(await response.text());
  }

  async function* feed(pageSize = 1000) {
    let after = 0;
    for (;;) {
      const page = await getJSON(`/ledger/feed.json?after=${after}&limit=${pageSize}`);
      yield* page;
      if (page.length < pageSize) return;
      after = num(page[page.length - 1].seq);
    }
  }

  // Everything the caller can see, from the hub's recorded head (read first) and its checkpoints.
  async function auditHub(progress) {
    const state = await getJSON("/ledger/state.json");
    return audit(feed(), state.head, state.checkpoints, progress);
  }

  return { parse, canonical, audit, auditHub, verifyInclusion, leafHash, unhex, hex, Num };
})();

function show(output, state, text, data = {}) {
  output.dataset.state = state;
  for (const [key, value] of Object.entries(data)) output.dataset[key] = value === null ? "" : String(value);
  output.textContent = text;
  output.className = state === "ok" ? "ok" : state === "bad" ? "error" : "";
}

function wireVerify() {
  const button = document.getElementById("verify"), output = document.getElementById("verify-result");
  if (!button || !output) return;
  if (!window.crypto || !crypto.subtle) {
    show(output, "unavailable", "This browser offers no WebCrypto here (it needs HTTPS or localhost).");
    return;
  }
  button.disabled = false;
  show(output, "idle", "Press the button to verify.");
  button.addEventListener("click", async () => {
    button.disabled = true;
    show(output, "running", "Verifying…");
    try {
      const r = await CLedger.auditHub((n) => show(output, "running", `Verifying… ${n} entries so far`));
      const data = { checked: r.checked, firstBad: r.firstBadSeq, badCheckpoint: r.badCheckpoint,
        root: r.root, headHash: r.headHash, checkpoints: r.checkpoints };
      if (r.ok) {
        show(output, "ok", `Verified: ${r.checked} entries, ${r.checkpoints} signed checkpoints; Merkle root ${r.root.slice(0, 16)}….`, data);
      } else {
        const where = r.firstBadSeq !== null ? `Entry ${r.firstBadSeq} is bad` : `Checkpoint ${r.badCheckpoint} is bad`;
        show(output, "bad", `${where}: ${r.reason} (${r.checked} entries verified before it).`, data);
      }
    } catch (err) {
      show(output, "error", `Could not verify: ${err.message}`);
    } finally {
      button.disabled = false;
    }
  });
}

function wireInclusion() {
  const button = document.getElementById("check-inclusion"), output = document.getElementById("inclusion-result");
  const facts = document.getElementById("inclusion");
  if (!button || !output || !facts || !window.crypto || !crypto.subtle) return;
  button.disabled = false;
  button.addEventListener("click", async () => {
    const d = facts.dataset;
    const path = d.path ? d.path.split(",").map(CLedger.unhex) : [];
    const leaf = await CLedger.leafHash(CLedger.unhex(d.entryHash));
    const ok = await CLedger.verifyInclusion(leaf, Number(d.seq) - 1, Number(d.size), path, CLedger.unhex(d.root));
    show(output, ok ? "ok" : "bad", ok ? `The proof holds: entry ${d.seq} is in the tree the hub signed.`
      : `The proof does not lead to the signed root: entry ${d.seq} is not shown to be in it.`);
  });
}

document.addEventListener("DOMContentLoaded", () => { wireVerify(); wireInclusion(); });
