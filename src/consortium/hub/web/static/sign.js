// Signing a vote in the page with the organisation's Ed25519 key (WebCrypto). The key file is read here,
// imported, used once and dropped: only the signature is posted. The signed bytes are what the CLI signs
// (consortium.governance.statements.vote_message): the ledger's actor tag and the canonical JSON of the
// proposal.voted event whose payload is the vote statement. Needs ledger.js (CLedger.canonical) first.
"use strict";

const CSign = (() => {
  const enc = new TextEncoder();

  class KeyProblem extends Error {}

  function derOf(pem) {
    const m = /-----BEGIN PRIVATE KEY-----([A-Za-z0-9+/=\s]*)-----END PRIVATE KEY-----/.exec(pem);
    if (!m) throw new KeyProblem("This file is not an organisation key: org.key is an unencrypted PKCS8 PEM file starting with -----BEGIN PRIVATE KEY-----.");
    try {
      return Uint8Array.from(atob(m[1].replace(/\s+/g, "")), (c) => c.charCodeAt(0));
    } catch (e) {
      throw new KeyProblem("The key file's PEM block is not valid base64.");
    }
  }

  const toStdBase64 = (b64url) => {
    const s = b64url.replace(/-/g, "+").replace(/_/g, "/");
    return s + "=".repeat((4 - (s.length % 4)) % 4);
  };

  // The private key (usable only to sign, not extractable) and its public key as the hub writes it.
  async function loadKey(pem) {
    const der = derOf(pem);
    let extractable;
    try {
      extractable = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, true, ["sign"]);
    } catch (e) {
      throw new KeyProblem("This file holds no Ed25519 private key the browser can read (org.key from `consortium org init` is one).");
    }
    const jwk = await crypto.subtle.exportKey("jwk", extractable);
    const publicKey = toStdBase64(jwk.x);
    const privateKey = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, false, ["sign"]);
    der.fill(0);
    return { privateKey, publicKey };
  }

  function voteMessage(fields) {
    const statement = { type: "consortium-vote/1", hub_id: fields.hubId, proposal_id: Number(fields.proposalId),
      content_hash: fields.contentHash, org: fields.org, choice: fields.choice, reason: fields.reason };
    return enc.encode("consortium-ledger-actor/1\n" + CLedger.canonical({ event_type: "proposal.voted", payload: statement }));
  }

  async function sign(privateKey, message) {
    const signature = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, privateKey, message));
    return btoa(String.fromCharCode(...signature));
  }

  return { KeyProblem, loadKey, voteMessage, sign };
})();

function wireVote() {
  const form = document.getElementById("vote-form");
  if (!form) return;
  const file = document.getElementById("vote-key"), problem = document.getElementById("vote-key-error");
  const signature = document.getElementById("vote-signature"), reason = document.getElementById("vote-reason");
  const say = (text) => {
    problem.textContent = text;
    problem.hidden = !text;
    if (text) file.setAttribute("aria-invalid", "true"); else file.removeAttribute("aria-invalid");
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    say("");
    if (!window.crypto || !crypto.subtle) return say("This browser offers no WebCrypto here (the hub must be reached over HTTPS or on localhost).");
    const chosen = file.files && file.files[0];
    if (!chosen) return say("Choose your organisation's key file (org.key) to sign the vote.");
    if (chosen.size > 4096) return say("This file is too large to be an organisation key (org.key is under 1 KiB).");
    try {
      const { privateKey, publicKey } = await CSign.loadKey(await chosen.text());
      const d = form.dataset;
      if (publicKey !== d.publicKey) {
        return say(`This is not ${d.org}'s current key: its public key differs from the one the hub holds for ${d.org} (key id ${d.keyId}). Load ${d.org}'s org.key.`);
      }
      const text = reason.value.toWellFormed ? reason.value.toWellFormed() : reason.value;
      reason.value = text;
      const choice = new FormData(form).get("choice");
      signature.value = await CSign.sign(privateKey, CSign.voteMessage({ ...d, choice, reason: text }));
      file.value = "";
      form.submit();
    } catch (err) {
      say(err instanceof CSign.KeyProblem ? err.message : `Could not sign: ${err.message}`);
    }
  });
}

document.addEventListener("DOMContentLoaded", wireVote);
