/*
 * The console's Spending section: tokens and cost per UTC day over the last
 * 30 or 90 days, stacked by model or by key (Chart.js, vendored, drawn on a
 * canvas: names are drawn as text, never parsed as HTML); the keys and models
 * that spent most today; the same ledger rows as a CSV download.
 * The numbers are /api/admin/spending's, the ledger's sums.
 */
import * as i18n from "./i18n.js";
import * as api from "./api.js";

const $ = window.jQuery;
const t = i18n.t;
const MOST_SERIES = 8; // more models or keys than this: the rest become one "others"
const COLOURS = ["#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#94a3b8"];

// options: {urls, call(method, url) -> Promise, download(url, name) -> Promise}.
export function Spending(options) {
  this.options = options;
  this.days = 30;
  this.by = "model";
  this.data = null;
  this.top = null;
  this.charts = {};
  this.$status = $("#spending-status");

  const self = this;
  $("[data-days]").on("click", function () {
    self.days = Number(this.getAttribute("data-days"));
    self.refresh();
  });
  $("[data-by]").on("click", function () {
    self.by = this.getAttribute("data-by");
    self.refresh();
  });
  $("#spending-csv").on("click", () => {
    const url = this.options.urls.csv + "?days=" + this.days;
    this.options.download(url, "chatproxy-spending.csv").catch((error) => {
      i18n.set(this.$status, "raw", { text: error.message || String(error.status) });
    });
  });
}

Spending.prototype.refresh = function () {
  $("[data-days]").each((_, button) => {
    button.setAttribute("aria-pressed", String(Number(button.getAttribute("data-days")) === this.days));
  });
  $("[data-by]").each((_, button) => {
    button.setAttribute("aria-pressed", String(button.getAttribute("data-by") === this.by));
  });
  i18n.set(this.$status, "console.spending.loading");
  const urls = this.options.urls;
  const spending = this.options.call("GET", urls.spending + "?days=" + this.days + "&by=" + this.by);
  const top = this.options.call("GET", urls.top + "?limit=5");
  return Promise.all([spending, top]).then(
    ([data, topToday]) => {
      this.data = data;
      this.top = topToday;
      this.$status.text("").removeAttr("data-i18n");
      this.render();
    },
    (error) => i18n.set(this.$status, "raw", { text: error.message || String(error.status) }),
  );
};

Spending.prototype.render = function () {
  if (!this.data) return;
  const data = this.data;
  const series = grouped(data.series);
  const labels = data.dates.map((day) => day.slice(5)); // MM-DD: the year is the period's
  this.chart("tokens", labels, series, "total_tokens", api.formatCount);
  this.chart("cost", labels, series, "cost", api.formatCost);
  $("#tokens-total").text(t("console.spending.total", { value: api.formatCount(data.totals.total_tokens) }));
  $("#cost-total").text(t("console.spending.total", { value: api.formatCost(data.totals.cost) }));
  if (!data.series.length) i18n.set(this.$status, "console.spending.empty");
  if (this.top) {
    $("#top-date").text(this.top.date);
    fillTop($("#top-keys"), this.top.keys);
    fillTop($("#top-models"), this.top.models);
  }
};

// A stacked bar chart of `field` per day, one dataset per series; made once, then updated.
Spending.prototype.chart = function (name, labels, series, field, format) {
  const datasets = series.map((entry, n) => ({
    label: entry.name,
    data: entry[field],
    backgroundColor: COLOURS[n % COLOURS.length],
    borderWidth: 0,
  }));
  const existing = this.charts[name];
  if (existing) {
    existing.data.labels = labels;
    existing.data.datasets = datasets;
    existing.update();
    return;
  }
  const canvas = document.getElementById(name + "-chart");
  this.charts[name] = new window.Chart(canvas, {
    type: "bar",
    data: { labels: labels, datasets: datasets },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      interaction: { mode: "index", intersect: false },
      scales: {
        x: { stacked: true, ticks: { maxRotation: 0, autoSkipPadding: 8 } },
        y: { stacked: true, beginAtZero: true, ticks: { callback: (value) => format(value) } },
      },
      plugins: {
        legend: { position: "bottom", labels: { boxWidth: 12 } },
        tooltip: { callbacks: { label: (item) => item.dataset.label + ": " + format(item.parsed.y) } },
      },
    },
  });
};

// The series, the first MOST_SERIES as they are and the rest summed as "others".
function grouped(series) {
  if (series.length <= MOST_SERIES + 1) return series;
  const kept = series.slice(0, MOST_SERIES);
  const rest = series.slice(MOST_SERIES);
  const others = { name: t("console.spending.others") };
  for (const field of ["requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost"]) {
    others[field] = rest[0][field].map((_, day) => rest.reduce((sum, entry) => sum + entry[field][day], 0));
  }
  return kept.concat([others]);
}

function fillTop($body, entries) {
  $body.empty();
  if (!entries.length) {
    const $cell = $("<td>", { colspan: 4, class: "console-empty" });
    i18n.set($cell, "console.top.none");
    $body.append($("<tr>").append($cell));
    return;
  }
  for (const entry of entries) {
    $("<tr>")
      .append(
        $("<td>", { class: "top-name" }).text(entry.name),
        $("<td>", { class: "number" }).text(api.formatCount(entry.requests)),
        $("<td>", { class: "number" }).text(api.formatCount(entry.total_tokens)),
        $("<td>", { class: "number" }).text(api.formatCost(entry.cost)),
      )
      .appendTo($body);
  }
}
