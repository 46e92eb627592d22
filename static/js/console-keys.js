/*
 * The console's Keys section: every key with its limits, models, last use,
 * expiry and today's spend against its daily quotas (bars); a new key is
 * shown once with a Copy button; limits, models and expiry are edited in the
 * same form; Revoke asks twice. Names are the owner's or anyone's text: shown
 * with .text() only.
 */
import * as i18n from "./i18n.js";
import * as api from "./api.js";
import { copyText } from "./clipboard.js";

const $ = window.jQuery;
const t = i18n.t;
const LIMIT_FIELDS = ["rpm", "tpm", "tokens_per_day", "usd_per_day"];
const CONFIRM_MS = 4000; // how long "Really revoke?" waits for its second click

// options: {urls, call(method, url, data) -> Promise, onChange()}: a key was made, changed or revoked.
export function Keys(options) {
  this.options = options;
  this.list = [];
  this.editing = null; // the key being edited, or null while making one
  this.$body = $("#keys-body");
  this.$status = $("#keys-status");
  this.$form = $("#key-editor");
  this.$error = $("#key-editor-error");
  this.$showRevoked = $("#show-revoked");

  $("#new-key").on("click", () => this.openEditor(null));
  $("#key-editor-cancel").on("click", () => this.closeEditor());
  this.$form.on("submit", (event) => {
    event.preventDefault();
    this.save();
  });
  this.$showRevoked.on("change", () => this.render());
  $("#made-key-copy").on("click", () => {
    copyText($("#made-key-value").text()).then(() => i18n.set($("#made-key-copy"), "console.made.copied"));
  });
  $("#made-key-close").on("click", () => {
    $("#made-key-value").text("");
    $("#made-key").prop("hidden", true);
  });
}

Keys.prototype.show = function (list) {
  this.list = (list && list.data) || [];
  this.render();
};

Keys.prototype.reload = function () {
  return this.options.call("GET", this.options.urls.keys).then((list) => this.show(list));
};

Keys.prototype.render = function () {
  const showRevoked = this.$showRevoked.prop("checked");
  const keys = this.list.filter((key) => showRevoked || key.state !== "revoked");
  this.$body.empty();
  if (!keys.length) {
    const $cell = $("<td>", { colspan: 6, class: "console-empty" });
    i18n.set($cell, "console.keys.none");
    this.$body.append($("<tr>").append($cell));
    return;
  }
  for (const key of keys) this.$body.append(this.row(key));
};

// One key's row; each cell carries its column's name for the phone layout.
Keys.prototype.row = function (key) {
  const $row = $("<tr>", { class: "key-row key-" + key.state });
  $row.attr("data-key-id", key.id);
  const cell = (column) => $("<td>").attr("data-label", t(column));

  const $name = cell("console.col.name");
  $("<span>", { class: "key-name" }).text(key.name).appendTo($name);
  const $tags = $("<span>", { class: "key-tags" }).appendTo($name);
  $("<code>", { class: "key-prefix" }).text(key.prefix + "…").appendTo($tags);
  if (key.admin) $("<span>", { class: "tag tag-admin" }).text(t("console.key.admin")).appendTo($tags);
  $("<span>", { class: "tag tag-" + key.state }).text(t("console.key.state." + key.state)).appendTo($tags);

  const limits = [];
  const limit = (text, n) => t(text, { count: n, n: api.formatCount(n) });
  if (key.rpm) limits.push(limit("console.key.rpm", key.rpm));
  if (key.tpm) limits.push(limit("console.key.tpm", key.tpm));
  if (key.tokens_per_day) limits.push(limit("console.key.tokensPerDay", key.tokens_per_day));
  if (key.usd_per_day) limits.push(t("console.key.usdPerDay", { usd: api.formatCost(key.usd_per_day) }));
  const $limits = cell("console.col.limits");
  $limits.text(limits.length ? limits.join(" · ") : t("console.key.noLimits"));

  const $models = cell("console.col.models").text(key.models ? key.models.join(", ") : t("console.key.allModels"));
  $models.addClass("key-models-cell");

  const $today = cell("console.col.today").addClass("key-today");
  const today = key.today;
  if (key.tokens_per_day) {
    $today.append(bar(today.total_tokens / key.tokens_per_day,
      t("console.key.usedTokens", { used: api.formatCount(today.total_tokens), limit: api.formatCount(key.tokens_per_day) })));
  }
  if (key.usd_per_day) {
    $today.append(bar(today.cost / key.usd_per_day,
      t("console.key.usedCost", { used: api.formatCost(today.cost), limit: api.formatCost(key.usd_per_day) })));
  }
  $("<span>", { class: "key-today-plain" })
    .text(t("console.key.usedPlain", {
      count: today.requests,
      requests: api.formatCount(today.requests),
      tokens: api.formatCount(today.total_tokens),
      cost: api.formatCost(today.cost),
    }))
    .appendTo($today);

  const $used = cell("console.col.used").addClass("key-dates");
  $("<span>").text(t("console.key.lastUsed", { when: when(key.last_used_at) })).appendTo($used);
  $("<span>").text(t("console.key.expires", { when: when(key.expires_at) })).appendTo($used);

  const $actions = $("<td>", { class: "key-actions" });
  if (key.state !== "revoked") {
    $("<button>", { type: "button", class: "button button-small key-edit" })
      .text(t("console.key.edit"))
      .on("click", () => this.openEditor(key))
      .appendTo($actions);
    $("<button>", { type: "button", class: "button button-small key-revoke" })
      .text(t("console.key.revoke"))
      .on("click", (event) => this.revoke(key, $(event.currentTarget)))
      .appendTo($actions);
  }
  return $row.append($name, $limits, $models, $today, $used, $actions);
};

// A bar of `share` (0..1, drawn up to 100 %) with its words beside it.
function bar(share, words) {
  const $bar = $("<div>", { class: "quota" });
  const $track = $("<div>", { class: "quota-track", role: "meter", "aria-label": words })
    .attr({ "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": Math.round(Math.min(share, 1) * 100) });
  // Set through the CSSOM (element.style), which the strict CSP allows, unlike a style attribute.
  const $fill = $("<div>", { class: "quota-fill" }).css("width", Math.min(100, share * 100).toFixed(1) + "%");
  if (share >= 1) $fill.addClass("quota-full");
  else if (share >= 0.8) $fill.addClass("quota-near");
  $track.append($fill);
  $bar.append($track, $("<span>", { class: "quota-words" }).text(words));
  return $bar;
}

// An ISO time as "2026-12-06 15:04 UTC", or "never".
function when(iso) {
  if (!iso) return t("console.key.never");
  return iso.slice(0, 16).replace("T", " ") + " UTC";
}

/* ---------- Make and edit ---------- */

Keys.prototype.openEditor = function (key) {
  this.editing = key;
  const form = this.$form[0];
  form.reset();
  this.$error.text("").removeAttr("data-i18n");
  $(form.elements.name).prop("disabled", !!key).closest("label").prop("hidden", !!key);
  $(form.elements.admin).prop("disabled", !!key).closest("label").prop("hidden", !!key);
  if (key) {
    i18n.set($("#key-editor-title"), "console.editor.edit", { name: key.name });
    i18n.set($("#key-editor-save"), "console.editor.save");
    for (const field of LIMIT_FIELDS) $(form.elements[field]).val(key[field] === null ? "" : key[field]);
    $(form.elements.expires_at).val(key.expires_at ? key.expires_at.slice(0, 10) : "");
    this.$form.find("input[name=models]").each(function () {
      this.checked = !!key.models && key.models.indexOf(this.value) !== -1;
    });
  } else {
    i18n.set($("#key-editor-title"), "console.editor.new");
    i18n.set($("#key-editor-save"), "console.editor.create");
  }
  this.$form.prop("hidden", false);
  $(key ? form.elements.rpm : form.elements.name).trigger("focus");
};

Keys.prototype.closeEditor = function () {
  this.$form.prop("hidden", true);
  this.editing = null;
};

// The form as the API's JSON: an empty limit is null (no limit).
Keys.prototype.fields = function () {
  const form = this.$form[0];
  const data = {};
  for (const field of LIMIT_FIELDS) {
    const raw = $.trim($(form.elements[field]).val());
    data[field] = raw === "" ? null : Number(raw);
  }
  const models = this.$form.find("input[name=models]:checked").map(function () {
    return this.value;
  }).get();
  data.models = models.length ? models : null;
  const expires = $(form.elements.expires_at).val();
  data.expires_at = expires ? expires + "T00:00:00Z" : null;
  if (!this.editing) {
    data.name = $.trim($(form.elements.name).val());
    data.admin = form.elements.admin.checked;
  }
  return data;
};

Keys.prototype.save = function () {
  const data = this.fields();
  const editing = this.editing;
  const urls = this.options.urls;
  const request = editing
    ? this.options.call("PATCH", urls.keys + "/" + editing.id, data)
    : this.options.call("POST", urls.keys, data);
  request.then(
    (key) => {
      this.closeEditor();
      if (!editing) {
        $("#made-key-value").text(key.key);
        i18n.set($("#made-key-copy"), "console.made.copy");
        $("#made-key").prop("hidden", false);
      }
      i18n.set(this.$status, editing ? "console.keys.saved" : "console.keys.created", { name: key.name });
      this.reload();
      this.options.onChange();
    },
    (error) => i18n.set(this.$error, "raw", { text: error.message || String(error.status) }),
  );
};

Keys.prototype.revoke = function (key, $button) {
  if (!$button.data("armed")) {
    $button.data("armed", true).addClass("button-danger").text(t("console.key.confirm"));
    setTimeout(() => {
      $button.data("armed", false).removeClass("button-danger").text(t("console.key.revoke"));
    }, CONFIRM_MS);
    return;
  }
  this.options.call("DELETE", this.options.urls.keys + "/" + key.id).then(
    () => {
      i18n.set(this.$status, "console.keys.revoked", { name: key.name });
      this.reload();
    },
    (error) => i18n.set(this.$status, "raw", { text: error.message || String(error.status) }),
  );
};
