// Small DOM helpers shared by the pages: messages, elements, token amounts, countdowns.

const DECIMALS = 18;

/** Show `text` in the page's #messages region: kind "error" (role=alert), "info" or "success"
 * (role=status). Returns the element; `replace` (default) clears earlier messages first. */
export function showMessage(text, kind = "error", { replace = true } = {}) {
  const box = document.getElementById("messages");
  if (replace) box.replaceChildren();
  const item = el("p", { class: `message message-${kind}`, role: kind === "error" ? "alert" : "status" }, text);
  box.append(item);
  return item;
}

/** Remove every message. */
export function clearMessages() {
  document.getElementById("messages").replaceChildren();
}

/** `document.createElement(tag)` with attributes (class, data-*, aria-*, on* handlers) and
 * children (strings become text nodes; null/undefined/false are skipped). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** `wei` (bigint or decimal string) in whole tokens, exact, thousands separated, trailing zeros
 * dropped: formatTokens(1500000000000000000n) === "1.5" (as offchain.api.routers.pages.format_tokens). */
export function formatTokens(wei, decimals = DECIMALS) {
  const value = BigInt(wei);
  const sign = value < 0n ? "-" : "";
  const abs = value < 0n ? -value : value;
  const unit = 10n ** BigInt(decimals);
  const whole = (abs / unit).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const fraction = (abs % unit).toString().padStart(decimals, "0").replace(/0+$/, "");
  return sign + whole + (fraction ? `.${fraction}` : "");
}

/** `seconds` (≥ 0) as "3 d 04 h 05 min 06 s" (leading zero units dropped). */
export function formatCountdown(seconds) {
  let s = Math.max(0, Math.floor(seconds));
  const days = Math.floor(s / 86400); s -= days * 86400;
  const hours = Math.floor(s / 3600); s -= hours * 3600;
  const minutes = Math.floor(s / 60); s -= minutes * 60;
  const pad = (n) => String(n).padStart(2, "0");
  if (days) return `${days} d ${pad(hours)} h ${pad(minutes)} min ${pad(s)} s`;
  if (hours) return `${hours} h ${pad(minutes)} min ${pad(s)} s`;
  if (minutes) return `${minutes} min ${pad(s)} s`;
  return `${s} s`;
}

/** "0x1234…abcd" for an address or hash (the full value belongs in a title attribute). */
export function shortHex(value) {
  return value && value.length > 12 ? `${value.slice(0, 6)}…${value.slice(-4)}` : value;
}

/** Run `task` (async) for a button: disabled and aria-busy while it runs, errors shown with
 * `describe(error)` in #messages. Returns whatever `task` returned (undefined after an error). */
export async function busy(button, task, describe) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await task();
  } catch (error) {
    showMessage(describe ? describe(error) : String(error?.message ?? error), "error");
    return undefined;
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}
