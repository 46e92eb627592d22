/*
 * The conversations API as the page uses it (README, "Conversations"):
 * JSON in and out, errors in OpenAI's shape {"error": {"message", "code", ...}}.
 * Streams (asking, regenerating) are read by app.js itself.
 */
(function () {
  "use strict";

  // A request that failed: `status` is 0 when chatproxy could not be reached.
  class ApiError extends Error {
    constructor(status, error) {
      super((error && error.message) || "");
      this.name = "ApiError";
      this.status = status;
      this.code = (error && error.code) || null;
    }
  }

  async function request(method, url, body) {
    const options = { method: method, headers: { Accept: "application/json" } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = typeof body === "string" ? body : JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, options);
    } catch (e) {
      throw new ApiError(0, null);
    }
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      // not JSON, e.g. an HTML error page from a proxy in between
    }
    if (!response.ok) throw new ApiError(response.status, data && data.error);
    return data;
  }

  // `base` is the collection's URL, e.g. "/api/conversations".
  function Conversations(base) {
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

  // The conversation with its messages, oldest first.
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

  Conversations.prototype.regenerateUrl = function (id) {
    return this.url(id, "/regenerate");
  };

  // What to tell the reader about a failed request, as an i18n text {key, params}.
  function describe(error) {
    const detail = (error && error.message) || "";
    if (!error || error.status === 0) return { key: "error.unreachable" };
    if (error.status === 404) return { key: "error.notFound", params: { detail: detail } };
    return { key: "error.http", params: { status: error.status, detail: detail } };
  }

  window.chatproxyApi = { ApiError: ApiError, Conversations: Conversations, describe: describe };
})();
