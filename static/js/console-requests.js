/*
 * The console's Requests section: the request log, newest first, filtered by
 * key, model, status and time, a page at a time (Older asks for the rows
 * before the last one shown). Every value is shown with .text().
 */
import * as i18n from "./i18n.js";
import * as api from "./api.js";

const $ = window.jQuery;
const t = i18n.t;
const PAGE = 50;

// options: {urls, call(method, url) -> Promise}.
export function Requests(options) {
  this.options = options;
  this.rows = [];
  this.hasMore = false;
  this.$body = $("#requests-body");
  this.$status = $("#requests-status");
  this.$older = $("#requests-older");
  this.$form = $("#request-filters");

  this.$form.on("submit", (event) => {
    event.preventDefault();
    this.refresh();
  });
  this.$form.on("reset", () => setTimeout(() => this.refresh(), 0));
  this.$older.on("click", () => this.load(true));
}

// The filters as the API's query: dates are whole UTC days.
Requests.prototype.query = function () {
  const form = this.$form[0];
  const params = new URLSearchParams({ limit: String(PAGE) });
  for (const name of ["key", "model", "status"]) {
    const value = $.trim($(form.elements[name]).val());
    if (value) params.set(name, value);
  }
  const since = $(form.elements.since).val();
  if (since) params.set("since", since + "T00:00:00Z");
  const until = $(form.elements.until).val();
  if (until) {
    const next = new Date(until + "T00:00:00Z");
    next.setUTCDate(next.getUTCDate() + 1); // through the end of that day
    params.set("until", next.toISOString());
  }
  return params;
};

Requests.prototype.refresh = function () {
  this.rows = [];
  return this.load(false);
};

Requests.prototype.load = function (older) {
  const params = this.query();
  if (older && this.rows.length) params.set("before", String(this.rows[this.rows.length - 1].id));
  i18n.set(this.$status, "console.requests.loading");
  return this.options.call("GET", this.options.urls.requests + "?" + params).then(
    (page) => {
      this.rows = this.rows.concat(page.data);
      this.hasMore = page.has_more;
      this.$status.text("").removeAttr("data-i18n");
      this.render();
    },
    (error) => i18n.set(this.$status, "raw", { text: error.message || String(error.status) }),
  );
};

Requests.prototype.render = function () {
  this.$body.empty();
  this.$older.prop("hidden", !this.hasMore);
  if (!this.rows.length) {
    const $cell = $("<td>", { colspan: 7, class: "console-empty" });
    i18n.set($cell, "console.requests.none");
    this.$body.append($("<tr>").append($cell));
    return;
  }
  for (const row of this.rows) this.$body.append(line(row));
};

function line(row) {
  const failed = row.status >= 400;
  // Each cell carries its column's name for the phone layout (console.css).
  const cell = (column, attributes) => $("<td>", attributes || {}).attr("data-label", t(column));
  const $result = cell("console.requests.result").append(
    $("<span>", { class: failed ? "request-failed" : "" }).text(String(row.status)),
    $("<span>", { class: "request-sub" }).text(row.outcome || ""),
  );
  const $tokens = cell("console.requests.tokens", { class: "number" });
  if (row.prompt_tokens !== null || row.completion_tokens !== null) {
    $tokens.text(t("console.requests.tokensIn", {
      prompt: api.formatCount(row.prompt_tokens || 0),
      completion: api.formatCount(row.completion_tokens || 0),
    }));
    if (row.reasoning_tokens) {
      $("<span>", { class: "request-sub" })
        .text(t("console.requests.reasoning", { n: api.formatCount(row.reasoning_tokens) }))
        .appendTo($tokens);
    }
  }
  const times = (row.ttft_ms === null ? "–" : seconds(row.ttft_ms)) + " · " + seconds(row.total_ms);
  return $("<tr>", { class: "request-row" }).append(
    cell("console.requests.at").append(
      $("<span>").text(row.at.slice(0, 19).replace("T", " ")),
      $("<span>", { class: "request-sub" }).text(row.request_id),
    ),
    cell("console.requests.key", { class: "request-route request-key" }).text(row.key || ""),
    cell("console.requests.route", { class: "request-route" }).append(
      $("<span>").text(row.route),
      $("<span>", { class: "request-sub" }).text([row.model, row.upstream].filter(Boolean).join(" · ")),
    ),
    $result,
    $tokens,
    cell("console.requests.cost", { class: "number" }).text(row.cost === null ? "" : api.formatCost(row.cost)),
    cell("console.requests.times", { class: "number" }).text(times),
  );
}

// 1234.5 ms as "1.23 s", under a second as "456 ms".
function seconds(ms) {
  return ms >= 1000 ? (ms / 1000).toFixed(2) + " s" : Math.round(ms) + " ms";
}
