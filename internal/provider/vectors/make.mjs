// Makes the signature fixtures that inboxd's provider tests check against, by signing
// requests with the providers' own libraries, at the versions pinned in package.json:
//
//   cd internal/provider/vectors && npm ci && npm run vectors
//
// It writes ../generic/testdata/vectors.json and ../twilio/testdata/vectors.json. Each
// case records everything needed to replay the request (headers, URL, body, the keys
// the receiver is configured with, the time it was signed) and whether a receiver
// must accept it. The cases use fixed ids, times and (for Ed25519) seeds, so running
// the script again gives the same files unless a library changes what it sends.
//
// Standard Webhooks' asymmetric scheme (v1a, Ed25519 over "id.timestamp.body") is not
// implemented by the standardwebhooks npm package at this version; its cases are signed
// with Node's crypto, which is what the scheme is, and marked so.
import crypto from "node:crypto";
import fs from "node:fs";
import { createRequire } from "node:module";
import { Webhook as StandardWebhook } from "standardwebhooks";
import { Webhook as SvixWebhook } from "svix";
import twilio from "twilio";

const require = createRequire(import.meta.url);
const version = (name) => require(`${name}/package.json`).version;

const secretA = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const secretB = "whsec_" + Buffer.from("a second secret, for rotation!!!").toString("base64");
const secretWrong = "whsec_" + Buffer.from("not the secret the receiver holds").toString("base64");
const at = new Date(1764064800 * 1000); // 2025-11-25T10:00:00Z
const body = JSON.stringify({
  type: "message.received", timestamp: "2026-11-25T10:00:00Z",
  data: { message_id: "m-vector-1", channel: "+15550001111", contact: "+15552223333", text: "héllo 👋 — ça va?" },
});

function standard(name, secret, configured, valid) {
  const id = `msg_${name}`;
  const signature = new StandardWebhook(secret).sign(id, at, body);
  return {
    name, library: `standardwebhooks ${version("standardwebhooks")}`, configured, valid, now: Math.floor(at / 1000),
    headers: { "webhook-id": id, "webhook-timestamp": String(Math.floor(at / 1000)), "webhook-signature": signature }, body,
  };
}

function svix(name, secret, configured, valid) {
  const id = `msg_${name}`;
  const signature = new SvixWebhook(secret).sign(id, at, body);
  return {
    name, library: `svix ${version("svix")}`, configured, valid, now: Math.floor(at / 1000),
    headers: { "svix-id": id, "svix-timestamp": String(Math.floor(at / 1000)), "svix-signature": signature }, body,
  };
}

function ed25519Pair(seedByte) {
  const seed = Buffer.alloc(32, seedByte);
  const der = Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), seed]); // PKCS#8 prefix for an Ed25519 seed
  const privateKey = crypto.createPrivateKey({ key: der, format: "der", type: "pkcs8" });
  const publicKey = crypto.createPublicKey(privateKey).export({ format: "der", type: "spki" }).subarray(12);
  return { privateKey, whpk: "whpk_" + publicKey.toString("base64") };
}

function v1a(name, pair, configured, valid) {
  const id = `msg_${name}`;
  const ts = String(Math.floor(at / 1000));
  const sig = crypto.sign(null, Buffer.from(`${id}.${ts}.${body}`), pair.privateKey).toString("base64");
  return {
    name, library: `node ${process.version} crypto (Ed25519; standardwebhooks ${version("standardwebhooks")} has no v1a)`,
    configured, valid, now: Number(ts), headers: { "webhook-id": id, "webhook-timestamp": ts, "webhook-signature": `v1a,${sig}` }, body,
  };
}

const pair = ed25519Pair(5);
const otherPair = ed25519Pair(6);
const generic = [
  standard("standard-v1", secretA, [secretA], true),
  standard("standard-v1-rotation", secretA, [secretB, secretA], true),
  standard("standard-v1-wrong-key", secretWrong, [secretA], false),
  svix("svix-v1", secretA, [secretA], true),
  svix("svix-v1-rotation", secretB, [secretA, secretB], true),
  svix("svix-v1-wrong-key", secretWrong, [secretA], false),
  v1a("standard-v1a", pair, [pair.whpk], true),
  v1a("standard-v1a-rotation-from-v1", pair, [secretA, otherPair.whpk, pair.whpk], true),
  v1a("standard-v1a-wrong-key", pair, [otherPair.whpk], false),
];

// Twilio: form posts with the auth token, JSON webhooks (bodySHA256), and SharedKey
// signatures with each algorithm, all through twilio-node's own functions.
const token = "twilio-vector-auth-token";
const sharedKey = "twilio-vector-shared-key-secret";
const base = "https://inbox.example.com/webhooks/twilio";
const form = {
  MessageSid: "SMvector00000000000000000000000001", AccountSid: "AC00000000000000000000000000000000",
  From: "+15552223333", To: "+15550001111", Body: "héllo 👋 — it's \"quoted\" & more", NumMedia: "0",
};
const formBody = new URLSearchParams(form).toString();
const jsonBody = JSON.stringify({ MessageSid: "SMvector00000000000000000000000002", From: "+15552223333", To: "+15550001111", Body: "json 👋", NumMedia: "0" });
const { getExpectedTwilioSignature, getExpectedBodyHash, validateRequest, validateRequestWithBody } = twilio;

function twilioForm(name, key, algorithm, configured, valid, url = `${base}?channel=sms&x=1`) {
  const headers = { "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": getExpectedTwilioSignature(key, url, form, algorithm) };
  if (algorithm) headers["X-Twilio-Webhooks-Signature-Settings"] = `key=KSvector,algorithm=${algorithm}`;
  if (valid !== validateRequest(configured.tokens[0] ?? configured.shared[0], headers["X-Twilio-Signature"], url, form, algorithm) && configured.tokens.length + configured.shared.length === 1) {
    throw new Error(`${name}: twilio-node disagrees with the expected outcome`);
  }
  return { name, library: `twilio ${version("twilio")}`, configured, valid, url, headers, body: formBody };
}

function twilioJSON(name, key, algorithm, configured, valid) {
  const url = `${base}?bodySHA256=${getExpectedBodyHash(jsonBody)}`;
  const headers = { "Content-Type": "application/json", "X-Twilio-Signature": getExpectedTwilioSignature(key, url, {}, algorithm) };
  if (algorithm) headers["X-Twilio-Webhooks-Signature-Settings"] = `key=KSvector,algorithm=${algorithm}`;
  if (valid !== validateRequestWithBody(configured.tokens[0] ?? configured.shared[0], headers["X-Twilio-Signature"], url, jsonBody, algorithm) && configured.tokens.length + configured.shared.length === 1) {
    throw new Error(`${name}: twilio-node disagrees with the expected outcome`);
  }
  return { name, library: `twilio ${version("twilio")}`, configured, valid, url, headers, body: jsonBody };
}

const onlyToken = { tokens: [token], shared: [] };
const onlyShared = { tokens: [], shared: [sharedKey] };
const twilioCases = [
  twilioForm("form-auth-token", token, undefined, onlyToken, true),
  twilioForm("form-auth-token-rotation", token, undefined, { tokens: ["the-new-token", token], shared: [] }, true),
  twilioForm("form-auth-token-wrong-key", "not-the-token", undefined, onlyToken, false),
  twilioForm("form-shared-key-sha256", sharedKey, "HMAC_SHA256", onlyShared, true),
  twilioForm("form-shared-key-sha1", sharedKey, "HMAC_SHA1", onlyShared, true),
  twilioForm("form-shared-key-rotation", sharedKey, "HMAC_SHA256", { tokens: [token], shared: ["the-next-shared-key", sharedKey] }, true),
  twilioForm("form-shared-key-wrong-key", "not-the-shared-key", "HMAC_SHA256", onlyShared, false),
  twilioJSON("json-auth-token", token, undefined, onlyToken, true),
  twilioJSON("json-auth-token-wrong-key", "not-the-token", undefined, onlyToken, false),
  twilioJSON("json-shared-key-sha256", sharedKey, "HMAC_SHA256", onlyShared, true),
];

const write = (file, cases) => fs.writeFileSync(new URL(file, import.meta.url), JSON.stringify(cases, null, 2) + "\n");
write("../generic/testdata/vectors.json", generic);
write("../twilio/testdata/vectors.json", twilioCases);
console.log(`wrote ${generic.length} generic and ${twilioCases.length} twilio cases`);
