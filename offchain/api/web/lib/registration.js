// Holder registration from a page: the exact v2 message offchain/api/registration.py checks
// (registration_message, images_root, captions_root, byte for byte), signed by the wallet with
// EIP-191 personal_sign, and the multipart body POST /holders expects.
//
//   const files = [...input.files];
//   const body = await buildRegistration({wallet, name, priceWei, files, captions, replace});
//   await postForm("/holders", body.form);
import { concat, getAddress, hexToBytes, sha256, stringToBytes } from "viem";

export const MESSAGE_HEADER = "offchain holder registration v2";

/** Hex SHA-256 (64 digits, no 0x) of a File/Blob's bytes. */
export async function fileSha256(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  return sha256(bytes).slice(2);
}

/** The caption as the server stores it: NFC-normalised, surrounding whitespace stripped. */
export function normalizeCaption(text) {
  return text.normalize("NFC").trim();
}

/** Hex SHA-256 (no 0x) of the 32-byte digests `hashes` (hex, 0x optional), sorted ascending
 * (registration.images_root). */
export function imagesRoot(hashes) {
  const sorted = hashes.map((h) => h.toLowerCase().replace(/^0x/, "")).sort();
  return sha256(concat(sorted.map((h) => hexToBytes(`0x${h}`)))).slice(2);
}

/** Hex SHA-256 (no 0x) binding each image to its caption (registration.captions_root):
 * `captions` maps image SHA-256 hex → caption as stored. */
export function captionsRoot(captions) {
  const pairs = Object.entries(captions).map(([h, text]) => [h.toLowerCase().replace(/^0x/, ""), text]);
  pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const parts = pairs.flatMap(([h, text]) => [hexToBytes(`0x${h}`), sha256(stringToBytes(text), "bytes")]);
  return sha256(concat(parts.length ? parts : [new Uint8Array()])).slice(2);
}

/** The text the holder signs (registration.registration_message): eight lines joined by "\n"
 * (nine with captions), no trailing newline. `priceWei` and `issuedAt` are bigints or integers. */
export function registrationMessage({ address, name, priceWei, hashes, issuedAt, replace, captions = null }) {
  return [
    MESSAGE_HEADER,
    `address: ${getAddress(address)}`,
    `name: ${name}`,
    `reservation_price_wei: ${BigInt(priceWei).toString()}`,
    `images: ${hashes.length}`,
    `images_root: 0x${imagesRoot(hashes)}`,
    ...(captions ? [`captions_root: 0x${captionsRoot(captions)}`] : []),
    `replace: ${replace ? "true" : "false"}`,
    `issued_at: ${BigInt(issuedAt).toString()}`,
  ].join("\n");
}

/** Check `files` against the node's limits before anything is signed; returns an error
 * sentence or null. `limits`: {maxImages, minImages, maxImageBytes, maxTotalBytes}. */
export function checkFiles(files, limits) {
  if (files.length < limits.minImages) return `Choose at least ${limits.minImages} image(s).`;
  if (files.length > limits.maxImages) {
    return `Too many images: ${files.length} chosen, this node accepts at most ${limits.maxImages}.`;
  }
  const big = files.find((f) => f.size > limits.maxImageBytes);
  if (big) {
    return `Image "${big.name}" is ${big.size} bytes, over this node's limit of ` +
      `${limits.maxImageBytes} bytes per image.`;
  }
  const total = files.reduce((sum, f) => sum + f.size, 0);
  if (total > limits.maxTotalBytes) {
    return `The images total ${total} bytes, over this node's limit of ${limits.maxTotalBytes} bytes.`;
  }
  return null;
}

/** Sign a registration with the wallet and build POST /holders' multipart body.
 * `captions`: one caption per file (same order) or null. Returns {form, message, hashes}.
 * Throws what the wallet throws (a rejection: code 4001). */
export async function buildRegistration({ wallet, name, priceWei, files, captions, replace, issuedAt }) {
  const hashes = await Promise.all(files.map(fileSha256));
  const stored = captions ? Object.fromEntries(hashes.map((h, i) => [h, normalizeCaption(captions[i])])) : null;
  const issued = issuedAt ?? Math.floor(Date.now() / 1000);
  const message = registrationMessage({
    address: wallet.account, name, priceWei, hashes, issuedAt: issued, replace, captions: stored,
  });
  const signature = await wallet.walletClient.signMessage({ account: wallet.account, message });
  const form = new FormData();
  form.append("address", wallet.account);
  form.append("name", name);
  form.append("reservation_price_wei", BigInt(priceWei).toString());
  form.append("signature", signature);
  form.append("issued_at", String(issued));
  if (replace) form.append("replace", "true");
  files.forEach((file) => form.append("images", file, file.name));
  if (stored) {
    form.append("captions", new Blob([JSON.stringify(stored)], { type: "application/json" }), "captions.json");
  }
  return { form, message, hashes };
}

