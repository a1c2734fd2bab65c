// JWT minting for the product tests, with node:crypto only (no npm packages).
//
//   hs256(claims, secret)            HMAC-SHA256
//   rs256(claims, privateKey)        RSASSA-PKCS1-v1_5 SHA-256
//   es256(claims, privateKey)        ECDSA P-256 SHA-256, raw r||s (ieee-p1363) signature
//   unsignedNone(claims)             {"alg":"none"} with an empty signature
//   signWith(alg, claims, key)       HS256/HS384/HS512/RS256/ES256 by name
//   claims({sub, ...})               exp/iat filled in (exp = now + 1 h unless given)
//   rsaKeyPair(), ecKeyPair()        key pairs; the public PEM is also written to a temp file

import crypto from "node:crypto";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";

export const nowSecs = () => Math.floor(Date.now() / 1000);

export function b64url(input) {
  const buf = Buffer.isBuffer(input)
    ? input
    : Buffer.from(typeof input === "string" ? input : JSON.stringify(input), "utf8");
  return buf.toString("base64url");
}

/** Standard claims for user `sub`: iat now, exp now + 3600 s unless overridden. `undefined` values are dropped. */
export function claims(overrides = {}) {
  const now = nowSecs();
  const c = { sub: "user", iat: now, exp: now + 3600, ...overrides };
  for (const k of Object.keys(c)) if (c[k] === undefined) delete c[k];
  return c;
}

function signingInput(header, payload) {
  return `${b64url(header)}.${b64url(payload)}`;
}

export function hs256(payload, secret, { header = {}, hash = "sha256", alg = "HS256" } = {}) {
  const input = signingInput({ alg, typ: "JWT", ...header }, payload);
  const sig = crypto.createHmac(hash, secret).update(input).digest();
  return `${input}.${b64url(sig)}`;
}

export function rs256(payload, privateKey, { header = {} } = {}) {
  const input = signingInput({ alg: "RS256", typ: "JWT", ...header }, payload);
  const sig = crypto.sign("sha256", Buffer.from(input), privateKey);
  return `${input}.${b64url(sig)}`;
}

export function es256(payload, privateKey, { header = {} } = {}) {
  const input = signingInput({ alg: "ES256", typ: "JWT", ...header }, payload);
  const sig = crypto.sign("sha256", Buffer.from(input), { key: privateKey, dsaEncoding: "ieee-p1363" });
  return `${input}.${b64url(sig)}`;
}

/** `alg: none`, hand-crafted: header.payload. (empty signature). */
export function unsignedNone(payload, { alg = "none" } = {}) {
  return `${signingInput({ alg, typ: "JWT" }, payload)}.`;
}

export function signWith(alg, payload, key) {
  switch (alg) {
    case "HS256":
      return hs256(payload, key);
    case "HS384":
      return hs256(payload, key, { hash: "sha384", alg: "HS384" });
    case "HS512":
      return hs256(payload, key, { hash: "sha512", alg: "HS512" });
    case "RS256":
      return rs256(payload, key);
    case "ES256":
      return es256(payload, key);
    default:
      throw new Error(`signWith: unsupported alg ${alg}`);
  }
}

/** Verify our own HS256 minting (sanity check used by the tests' self-test). */
export function verifyHs256(token, secret) {
  const [h, p, s] = token.split(".");
  const expect = crypto.createHmac("sha256", secret).update(`${h}.${p}`).digest("base64url");
  return expect === s;
}

const tempDirs = [];
process.on("exit", () => {
  for (const d of tempDirs) {
    try {
      rmSync(d, { recursive: true, force: true });
    } catch {
      /* ignore */
    }
  }
});

function writePem(pem, name) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "switchboard-jwt-"));
  tempDirs.push(dir);
  const file = path.join(dir, name);
  writeFileSync(file, pem);
  return file;
}

/** RSA 2048 key pair; {privateKey, publicKey (KeyObjects), publicPem, publicKeyFile}. */
export function rsaKeyPair() {
  const { privateKey, publicKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  const publicPem = publicKey.export({ type: "spki", format: "pem" });
  return { privateKey, publicKey, publicPem, publicKeyFile: writePem(publicPem, "rsa-public.pem") };
}

/** EC P-256 key pair; {privateKey, publicKey (KeyObjects), publicPem, publicKeyFile}. */
export function ecKeyPair() {
  const { privateKey, publicKey } = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
  const publicPem = publicKey.export({ type: "spki", format: "pem" });
  return { privateKey, publicKey, publicPem, publicKeyFile: writePem(publicPem, "ec-public.pem") };
}
