// The REST API, and nothing else: every call sends the signed-in token as a Bearer token.
// Errors carry the API's own message ({"detail": "..."}) so views can show it as is.

const TOKEN_KEY = "gpupool.token";
const BASE = new URL("api/v1/", document.baseURI);

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
    this.detail = detail;
  }
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function detailOf(status, body) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) {
    return body.detail.map((d) => (d && d.msg) || String(d)).join("; ");
  }
  return `the server answered HTTP ${status}`;
}

/**
 * Call the API at `path` (relative to /api/v1/, may hold a query string). Resolves to the
 * decoded JSON body; rejects with ApiError (status 0 when the server cannot be reached).
 * A 401 also fires the "gpupool:unauthorized" event so the app can return to sign-in.
 */
export async function api(path, options = {}) {
  return (await call(path, options)).data;
}

/**
 * One page of a paged listing at `path`: `{ items, next }`, where `next` is the cursor of the
 * next page (the X-Next-Cursor header), or null when no more rows exist.
 */
export async function apiPage(path, options = {}) {
  const { data, response } = await call(path, options);
  return { items: data, next: response.headers.get("X-Next-Cursor") };
}

async function call(path, { method = "GET", body, token } = {}) {
  const headers = { Accept: "application/json" };
  const auth = token ?? getToken();
  if (auth) headers.Authorization = `Bearer ${auth}`;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(new URL(path, BASE), init);
  } catch (err) {
    throw new ApiError(0, `cannot reach the gpupool server (${err.message})`);
  }
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, detailOf(response.status, data));
    if (response.status === 401 && token === undefined) {
      window.dispatchEvent(new CustomEvent("gpupool:unauthorized", { detail: error.detail }));
    }
    throw error;
  }
  return { data, response };
}

/** A query string from an object, skipping empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") q.set(key, String(value));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

/**
 * Download the file at `path` (relative to /api/v1/) with the signed-in token and hand it to
 * the browser as `filename` (a link to an object URL, clicked). Rejects with ApiError.
 */
export async function download(path, filename) {
  let response;
  try {
    response = await fetch(new URL(path, BASE), {
      headers: { Authorization: `Bearer ${getToken()}` }, cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, `cannot reach the server: ${err.message}`);
  }
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch { /* not JSON */ }
    throw new ApiError(response.status, detailOf(response.status, body));
  }
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
