/*
 * chatproxy's API as the page uses it (docs/conversations.md and
 * docs/access.md): JSON in and out, errors in OpenAI's shape
 * {"error": {"message", "code", ...}}. Streams (asking, regenerating) are
 * read by sse.js, through `authorizedFetch`.
 *
 * The access key: kept in localStorage ("chatproxy.key") and sent as
 * `Authorization: Bearer cpk-...` with every request, never in a URL (URLs end
 * up in histories and proxies' logs). A 401 for the key the page holds now
 * tells the listeners of `access.onRefused`; access.js then asks for a key.
 */

const KEY_STORAGE = "chatproxy.key";

// A request that failed: `status` is 0 when chatproxy could not be reached;
// `retryAfter` is the wait in seconds a 429 named (0: none named).
export class ApiError extends Error {
  constructor(status, error, retryAfter) {
    super((error && error.message) || "");
    this.name = "ApiError";
    this.status = status;
    this.code = (error && error.code) || null;
    this.retryAfter = retryAfter || 0;
  }
}

/* ---------- The access key ---------- */

const refusedListeners = [];
let memoryKey = null; // the key when localStorage is off: kept for this page only

export const access = {
  // The key this browser holds, or null.
  key() {
    try {
      const stored = window.localStorage.getItem(KEY_STORAGE);
      if (stored) return stored;
    } catch (e) {
      // storage may be off (private mode, a policy)
    }
    return memoryKey;
  },

  save(key) {
    memoryKey = key;
    try {
      window.localStorage.setItem(KEY_STORAGE, key);
    } catch (e) {
      // kept in memory: it works until the page is closed
    }
  },

  forget() {
    memoryKey = null;
    try {
      window.localStorage.removeItem(KEY_STORAGE);
    } catch (e) {
      // nothing was stored
    }
  },

  // `listener({code, message, key})` hears of every 401 for the key held now.
  onRefused(listener) {
    refusedListeners.push(listener);
  },
};

// `headers` plus the Authorization of `key` (default: the key held now).
function withKey(headers, key) {
  const all = Object.assign({}, headers || {});
  if (key === undefined) key = access.key();
  if (key) all.Authorization = "Bearer " + key;
  return all;
}

// fetch() with the access key. A 401 is reported to the onRefused listeners,
// unless the key changed while the request was on its way (its 401 is stale).
// Rejects as fetch does (network failure, abort); any HTTP status resolves.
export async function authorizedFetch(url, options) {
  const key = access.key();
  const response = await fetch(url, Object.assign({}, options, { headers: withKey(options && options.headers, key) }));
  if (response.status === 401 && access.key() === key) {
    let error = {};
    try {
      const data = await response.clone().json();
      error = (data && data.error) || {};
    } catch (e) {
      // not JSON: a 401 from a proxy in between still means "no access"
    }
    refusedListeners.forEach((listener) => listener({ code: error.code || null, message: error.message || "", key: key }));
  }
  return response;
}

// Retry-After is either a number of seconds or an HTTP date; 0 when absent.
export function retryAfterSeconds(header) {
  if (!header) return 0;
  if (/^\s*\d+\s*$/.test(header)) return Math.max(1, parseInt(header, 10));
  const when = Date.parse(header);
  return isNaN(when) ? 0 : Math.max(1, Math.ceil((when - Date.now()) / 1000));
}

// An ApiError for a response that is not ok, from its OpenAI-shaped body.
export async function errorOf(response) {
  let data = null;
  try {
    data = await response.json();
  } catch (e) {
    // not JSON, e.g. an HTML error page from a proxy in between
  }
  return new ApiError(response.status, data && data.error, retryAfterSeconds(response.headers.get("Retry-After")));
}

// `options.key` sends that key instead of the one held (checking a new key;
// the console sends its admin key so).
export async function request(method, url, body, options) {
  const init = { method: method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  let response;
  try {
    if (options && options.key !== undefined) {
      init.headers = withKey(init.headers, options.key);
      response = await fetch(url, init);
    } else {
      response = await authorizedFetch(url, init);
    }
  } catch (e) {
    throw new ApiError(0, null);
  }
  if (!response.ok) throw await errorOf(response);
  if (response.status === 204) return null;
  try {
    return await response.json();
  } catch (e) {
    return null;
  }
}

/* ---------- Conversations ---------- */

// `base` is the collection's URL, e.g. "/api/conversations".
export function Conversations(base) {
  this.base = base.replace(/\/+$/, "");
}

Conversations.prototype.url = function (id, rest) {
  return this.base + "/" + encodeURIComponent(id) + (rest || "");
};

// Summaries, most recently updated first; `query` filters by title.
Conversations.prototype.list = function (query, limit) {
  const params = new URLSearchParams({ limit: String(limit || 100) });
  if (query) params.set("q", query);
  return request("GET", this.base + "?" + params).then((data) => (data && data.data) || []);
};

// The conversation with its current branch's messages, oldest first, each
// with the ids of its versions (`siblings`).
Conversations.prototype.get = function (id) {
  return request("GET", this.url(id));
};

Conversations.prototype.rename = function (id, title) {
  return request("PATCH", this.url(id), { title: title });
};

Conversations.prototype.remove = function (id) {
  return request("DELETE", this.url(id));
};

// `text` is the content of an export file, sent as it is: the server checks it.
Conversations.prototype.importText = function (text) {
  return request("POST", this.base + "/import", text);
};

Conversations.prototype.exportUrl = function (id, format) {
  return this.url(id, "/export?format=" + encodeURIComponent(format));
};

// The export as a file: {blob, name}, the name from Content-Disposition.
// Fetched with the key in a header, so the link itself carries no key.
Conversations.prototype.download = async function (id, format) {
  let response;
  try {
    response = await authorizedFetch(this.exportUrl(id, format), { method: "GET" });
  } catch (e) {
    throw new ApiError(0, null);
  }
  if (!response.ok) throw await errorOf(response);
  const blob = await response.blob();
  const name = fileName(response.headers.get("Content-Disposition")) || "conversation." + format;
  return { blob: blob, name: name };
};

// Shows another version of a turn: the branch through `messageId` becomes
// the current one; resolves to the conversation on that branch.
Conversations.prototype.choose = function (id, messageId) {
  return request("POST", this.url(id, "/current"), { message_id: messageId });
};

Conversations.prototype.regenerateUrl = function (id) {
  return this.url(id, "/regenerate");
};

Conversations.prototype.continueUrl = function (id) {
  return this.url(id, "/continue");
};

// The file name of a Content-Disposition: filename*=UTF-8''... (RFC 5987,
// e.g. a Chinese title) before filename="...". Null when there is none.
function fileName(disposition) {
  if (!disposition) return null;
  const extended = /filename\*\s*=\s*(?:UTF-8|utf-8)''([^;]+)/.exec(disposition);
  if (extended) {
    try {
      return decodeURIComponent(extended[1].trim());
    } catch (e) {
      // malformed: try the plain name
    }
  }
  const plain = /filename\s*=\s*(?:"([^"]*)"|([^;]+))/.exec(disposition);
  const name = plain && (plain[1] !== undefined ? plain[1] : plain[2]);
  return name ? name.trim() : null;
}

/* ---------- Usage and models ---------- */

// GET /api/usage: {key: {name, rpm, tpm, tokens_per_day, usd_per_day, models},
// today: {date, requests, prompt_tokens, completion_tokens, total_tokens, cost}, days}.
// `key` checks another key than the one held (before keeping it).
export function usage(url, key) {
  return request("GET", url, undefined, key === undefined ? undefined : { key: key });
}

// GET /api/models: [{id, default}], the models the key may use.
export function models(url) {
  return request("GET", url).then((data) => (data && data.data) || []);
}

/* ---------- Numbers ---------- */

// 12,345 (or "?" when there is no number).
export function formatCount(n) {
  return typeof n === "number" ? n.toLocaleString("en-US") : "?";
}

// US dollars: cents from $0.10 up, else two significant digits ($0.000058).
export function formatCost(usd) {
  if (usd === 0) return "$0";
  if (usd >= 0.1) return "$" + usd.toFixed(2);
  if (usd < 0.000001) return "<$0.000001";
  return "$" + usd.toPrecision(2).replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "");
}

/* ---------- Messages ---------- */

// "Try again in 42 s." and the like, as an i18n text {key, params}.
export function retryText(seconds) {
  if (!seconds) return { key: "retry.moment" };
  if (seconds < 120) return { key: "retry.seconds", params: { n: seconds } };
  const minutes = Math.ceil(seconds / 60);
  if (minutes < 120) return { key: "retry.minutes", params: { n: minutes } };
  return { key: "retry.hours", params: { h: Math.floor(minutes / 60), m: minutes % 60 } };
}

// chatproxy's own limits (docs/access.md, "What a key may do"), by error code.
const LIMITS = {
  rate_limit_exceeded: "limit.requests",
  tokens_per_minute_exceeded: "limit.tokensPerMinute",
  tokens_per_day_exceeded: "limit.tokensPerDay",
  usd_per_day_exceeded: "limit.usdPerDay",
};

// A 429 of one of chatproxy's limits: what it was and when to try again, or
// null for another 429 (the upstream's own). `message` is the server's
// (English) text, shown as it is; its "Try again later." gives way to the wait.
export function limitMessage(code, message, seconds) {
  const reason = LIMITS[code];
  if (!reason) return null;
  const detail = (message || "").replace(/\s*Try again later\.?\s*$/, "");
  const params = { reason: { key: reason }, retry: retryText(seconds), detail: detail };
  return { key: detail ? "error.limited" : "error.limitedPlain", params: params };
}

// What to tell the reader about a failed request, as an i18n text {key, params}.
export function describe(error) {
  const detail = (error && error.message) || "";
  if (!error || error.status === 0) return { key: "error.unreachable" };
  if (error.status === 401) return { key: "error.keyRequired" };
  if (error.status === 404) return { key: "error.notFound", params: { detail: detail } };
  if (error.status === 429) {
    return limitMessage(error.code, detail, error.retryAfter) || { key: "error.rateLimitedAgain", params: { retry: retryText(error.retryAfter) } };
  }
  return { key: "error.http", params: { status: error.status, detail: detail } };
}
