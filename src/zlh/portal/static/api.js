// The portal's one door to the API: JSON in and out, errors as ApiError, 401 → sign-in.

export class ApiError extends Error {
  constructor(status, body, retryAfter = 0) {
    super(body && body.message ? body.message : `request failed (${status})`);
    this.status = status;
    this.retryAfter = retryAfter; // seconds, from a 429's Retry-After
    this.detail = (body && body.detail) || "";
    this.validations = (body && body.validations) || [];
  }

  // The whole error in words, as the API said it.
  describe() {
    const parts = [this.message];
    if (this.detail) parts.push(this.detail);
    for (const v of this.validations) parts.push(`${v.field}: ${v.detail}`);
    return parts.join(" — ");
  }
}

// Only same-site paths are followed after sign-in (no open redirects).
export function safeNext(value) {
  if (typeof value !== "string" || !value.startsWith("/") || value.startsWith("//")) return "/";
  if (value.startsWith("/login")) return "/";
  return value;
}

export function toLogin() {
  const next = location.pathname + location.search;
  location.assign("/login?next=" + encodeURIComponent(safeNext(next)));
}

async function errorFrom(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = { message: `${res.status} ${res.statusText}` };
  }
  return new ApiError(res.status, body, Number(res.headers.get("Retry-After")) || 0);
}

export async function api(path, { method = "GET", json, body, headers = {}, raw = false } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, credentials: "same-origin" };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  const res = await fetch(path, init);
  if (res.status === 401 && !path.startsWith("/api/auth/login")) {
    toLogin();
    throw new ApiError(401, { message: "Your session has ended. Sign in again." });
  }
  if (!res.ok) throw await errorFrom(res);
  if (raw) return res;
  if (res.status === 204) return null;
  return res.json();
}

// Uploads use XMLHttpRequest: fetch cannot report upload progress.
export function upload(path, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", path);
    xhr.withCredentials = true;
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onerror = () => reject(new ApiError(0, { message: "the upload was cut off (network error)" }));
    xhr.onload = () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = { message: `${xhr.status} ${xhr.statusText}` };
      }
      if (xhr.status === 401) toLogin();
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError(xhr.status, body));
    };
    xhr.send(file);
  });
}
