// The HTTP API as the page uses it: every call carries the key, every error becomes an
// ApiError built from the RFC 9457 problem (title, detail), never a raw body or a stack trace.

const ROOT = document.querySelector('meta[name="locoserve-root"]').content;
const KEY_STORAGE = "locoserve-key";

export const url = (path) => (path.startsWith(ROOT + "/") ? path : ROOT + path);

export const key = {
  get: () => localStorage.getItem(KEY_STORAGE) || "",
  set: (k) => localStorage.setItem(KEY_STORAGE, k),
  forget: () => localStorage.removeItem(KEY_STORAGE),
};

export class ApiError extends Error {
  constructor(status, title, detail, body = {}, retryAfter = null) {
    super(detail ? `${title}: ${detail}` : title);
    Object.assign(this, { status, title, detail, body, retryAfter });
  }
}

function problemFrom(status, statusText, text, retryAfter) {
  let body = {};
  try {
    body = JSON.parse(text);
  } catch {
    // a proxy's HTML error page or an empty body: say the status, not the markup
  }
  const title = body.title || statusText || `HTTP ${status}`;
  return new ApiError(status, title, body.detail || "", body, retryAfter);
}

function headers(extra = {}) {
  const k = key.get();
  return k ? { Authorization: `Bearer ${k}`, ...extra } : extra;
}

export async function request(path, { method = "GET", as = "json" } = {}) {
  let r;
  try {
    r = await fetch(url(path), { method, headers: headers() });
  } catch (e) {
    throw new ApiError(0, "Service unreachable", "the request did not reach Locoserve; check the connection");
  }
  if (!r.ok && r.status !== 202) {
    throw problemFrom(r.status, r.statusText, await r.text(), r.headers.get("Retry-After"));
  }
  if (as === "response") return r;
  return as === "json" ? r.json() : r.arrayBuffer();
}

// XMLHttpRequest rather than fetch: only it reports upload progress.
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url(path));
    for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onload = () => {
      if (xhr.status === 200 || xhr.status === 202) {
        resolve(JSON.parse(xhr.responseText));
      } else {
        reject(problemFrom(xhr.status, xhr.statusText, xhr.responseText, xhr.getResponseHeader("Retry-After")));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, "Upload failed", "the connection was lost during the upload"));
    xhr.send(form);
  });
}

// A file is saved from its signed link (…?token=, no key needed), so that the browser streams
// it to disk under the service's name instead of holding it in memory first. Links expire
// (link_ttl_s), so the job is read again for fresh ones.
export async function save(jobId, pick) {
  const job = await request(`/api/jobs/${jobId}`);
  const link = pick(job);
  if (!link) throw new ApiError(404, "Not available", "this job's results are no longer kept");
  const a = document.createElement("a");
  a.href = url(link);
  a.download = ""; // the name comes from Content-Disposition
  document.body.append(a);
  a.click();
  a.remove();
}
