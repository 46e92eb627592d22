/*
 * The console's Traffic section: requests per hour by outcome (stacked bars),
 * the time to first token and total time per hour (p50, p90, p99 lines), the
 * upstream servers (requests, failures, failovers, set aside now), errors by
 * code, and the streams in flight now; from /api/admin/traffic.
 */
import * as i18n from "./i18n.js";
import * as api from "./api.js";

const $ = window.jQuery;
const t = i18n.t;
const OUTCOME_COLOURS = { ok: "#16a34a", client_gone: "#94a3b8" };
const OTHER_COLOURS = ["#dc2626", "#f59e0b", "#7c3aed", "#db2777", "#0891b2", "#65a30d", "#2563eb"];
const LINES = [
  ["ttft_ms", "console.traffic.ttft", ["#93c5fd", "#3b82f6", "#1e3a8a"]],
  ["total_ms", "console.traffic.total", ["#fcd34d", "#f59e0b", "#92400e"]],
];

// options: {urls, call(method, url) -> Promise}.
export function Traffic(options) {
  this.options = options;
  this.hours = 24;
  this.data = null;
  this.charts = {};
  this.$status = $("#traffic-status");
  const self = this;
  $("[data-hours]").on("click", function () {
    self.hours = Number(this.getAttribute("data-hours"));
    self.refresh();
  });
  $("#traffic-refresh").on("click", () => this.refresh());
}

Traffic.prototype.refresh = function () {
  $("[data-hours]").each((_, button) => {
    button.setAttribute("aria-pressed", String(Number(button.getAttribute("data-hours")) === this.hours));
  });
  i18n.set(this.$status, "console.traffic.loading");
  return this.options.call("GET", this.options.urls.traffic + "?hours=" + this.hours).then(
    (data) => {
      this.data = data;
      this.$status.text("").removeAttr("data-i18n");
      this.render();
    },
    (error) => i18n.set(this.$status, "raw", { text: error.message || String(error.status) }),
  );
};

Traffic.prototype.render = function () {
  const data = this.data;
  if (!data) return;
  const labels = data.hours.map((hour) => hour.slice(5, 13).replace("T", " ") + "h");
  let other = 0;
  const outcomes = data.outcomes.map((entry) => ({
    label: entry.name,
    data: entry.requests,
    backgroundColor: OUTCOME_COLOURS[entry.name] || OTHER_COLOURS[other++ % OTHER_COLOURS.length],
    borderWidth: 0,
  }));
  this.chart("outcomes", "bar", labels, outcomes, true);
  const lines = [];
  for (const [field, name, colours] of LINES) {
    ["p50", "p90", "p99"].forEach((p, n) => {
      lines.push({
        label: t("console.traffic.series", { what: t(name), p: p.slice(1) }),
        data: data[field][p],
        borderColor: colours[n],
        backgroundColor: colours[n],
        spanGaps: true,
        pointRadius: 2,
        borderWidth: 2,
      });
    });
  }
  this.chart("times", "line", labels, lines, false);
  i18n.set($("#streams-now"), "console.traffic.streams", { count: data.streams_in_flight });
  fill($("#upstreams-body"), data.upstreams, 5, (entry) => [
    $("<td>", { class: "top-name" }).text(entry.name),
    $("<td>", { class: "number" }).text(api.formatCount(entry.requests)),
    $("<td>", { class: "number" }).text(api.formatCount(entry.failures)),
    $("<td>", { class: "number" }).text(api.formatCount(entry.failovers)),
    entry.set_aside_seconds > 0
      ? $("<td>", { class: "upstream-aside" }).text(t("console.traffic.setAside", { seconds: Math.ceil(entry.set_aside_seconds) }))
      : $("<td>").text(t("console.traffic.inUse")),
  ]);
  fill($("#errors-body"), data.errors, 3, (entry) => [
    $("<td>", { class: "top-name" }).text(entry.code),
    $("<td>", { class: "number" }).text(String(entry.status)),
    $("<td>", { class: "number" }).text(api.formatCount(entry.requests)),
  ]);
};

Traffic.prototype.chart = function (name, type, labels, datasets, stacked) {
  const existing = this.charts[name];
  if (existing) {
    existing.data.labels = labels;
    existing.data.datasets = datasets;
    existing.update();
    return;
  }
  this.charts[name] = new window.Chart(document.getElementById(name + "-chart"), {
    type: type,
    data: { labels: labels, datasets: datasets },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      interaction: { mode: "index", intersect: false },
      scales: {
        x: { stacked: stacked, ticks: { maxRotation: 0, autoSkipPadding: 12 } },
        y: { stacked: stacked, beginAtZero: true },
      },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
    },
  });
};

function fill($body, entries, columns, cells) {
  $body.empty();
  if (!entries.length) {
    const $cell = $("<td>", { colspan: columns, class: "console-empty" });
    i18n.set($cell, "console.traffic.none");
    $body.append($("<tr>").append($cell));
    return;
  }
  for (const entry of entries) $("<tr>").append(cells(entry)).appendTo($body);
}
