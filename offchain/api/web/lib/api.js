// The node's HTTP API from a page: JSON in and out, and errors a person can read.
//   ApiError      the node answered with an error status (its `detail` is kept).
//   NodeDownError the node did not answer at all (stopped, restarting, network down).
// Amounts in every response are decimal strings of wei: parse them with BigInt, never Number.

export class ApiError extends Error {
  constructor(status, detail, path) {
    super(`The node refused ${path}: ${detailText(detail)} (HTTP ${status})`);
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
    this.path = path;
  }
}

export class NodeDownError extends Error {
  constructor(path, cause) {
    super(`The node at ${window.location.origin} is not answering (${path}). ` +
      "It may be stopped or restarting: try again in a moment.");
    this.name = "NodeDownError";
    this.cause = cause;
  }
}

function detailText(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) { // FastAPI's validation errors: [{loc, msg}, ...]
    return detail.map((d) => `${(d.loc || []).slice(1).join(".") || "body"}: ${d.msg}`).join("; ");
  }
  return JSON.stringify(detail);
}

async function send(path, init) {
  let response;
  try {
    response = await fetch(path, { ...init, headers: { accept: "application/json", ...init.headers } });
  } catch (error) {
    throw new NodeDownError(path, error);
  }
  if (response.status === 502 || response.status === 503 && !response.headers.get("content-type")?.includes("json")) {
    throw new NodeDownError(path, new Error(`HTTP ${response.status}`)); // a proxy with no node behind it
  }
  const body = await response.text();
  let data = null;
  try {
    data = body ? JSON.parse(body) : null;
  } catch {
    if (response.ok) throw new ApiError(response.status, "the answer is not JSON", path);
  }
  if (!response.ok) throw new ApiError(response.status, data?.detail ?? (body || response.statusText), path);
  return data;
}

/** GET `path` (e.g. "/rounds"): the parsed JSON. Throws ApiError or NodeDownError. */
export function getJson(path) {
  return send(path, { method: "GET", headers: {} });
}

/** POST `body` as JSON to `path`: the parsed JSON answer. Throws ApiError or NodeDownError. */
export function postJson(path, body) {
  return send(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
}

/** POST a FormData (multipart, e.g. uploaded images) to `path`. Throws ApiError or NodeDownError. */
export function postForm(path, formData) {
  return send(path, { method: "POST", headers: {}, body: formData });
}
