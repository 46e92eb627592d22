/*
 * The access key and what it used today.
 *
 * With CHATPROXY_AUTH=keys every API request needs a key of this chatproxy
 * (`cpk-...`, made by its owner). The page asks for it in a dialog the first
 * time chatproxy answers 401, checks it (GET /api/usage), keeps it in this
 * browser (api.js sends it with every request) and tells app.js, which loads
 * again what failed. The Key button in the header opens the same dialog to
 * change or forget the key. In open mode there is no key, no button and no
 * dialog.
 *
 * The usage line in the sidebar shows today's requests, tokens and cost of the
 * key (or of everyone, in open mode), with the key's limits.
 */
import * as i18n from "./i18n.js";
import * as api from "./api.js";

const $ = window.jQuery;
const access = api.access;

// options: {auth ("keys" or "open"), usageUrl, announce(text),
// onChange(previousKey, key)}: the key was saved, changed or forgotten.
export function Access(options) {
  this.options = options;
  this.keysMode = options.auth !== "open";
  this.usageLoads = 0;
  this.keyName = null; // the held key's name, once /api/usage told it
  this.returnFocus = null;

  this.$usage = $("#usage");
  this.$usageToday = $("#usage-today");
  this.$usageLimits = $("#usage-limits");
  this.$button = $("#key-button");
  this.dialog = document.getElementById("key-dialog");
  this.$title = $("#key-dialog-title");
  this.$state = $("#key-state");
  this.$input = $("#key-input");
  this.$error = $("#key-error");
  this.$forget = $("#key-forget");
  this.$save = $("#key-save");
  this.$cancel = $("#key-cancel");

  if (!this.keysMode || !this.dialog) return;
  access.onRefused((refusal) => this.refused(refusal));
  this.$button.on("click", () => this.open("change"));
  $("#key-form").on("submit", (event) => {
    event.preventDefault();
    this.save();
  });
  this.$cancel.on("click", () => this.close());
  this.$forget.on("click", () => this.forget());
  this.$input.on("input", () => this.showError(null));
  this.dialog.addEventListener("close", () => this.closed());
}

Access.prototype.isOpen = function () {
  return !!(this.dialog && this.dialog.open);
};

/* ---------- The dialog ---------- */

// chatproxy answered 401 for the key held now (or for no key).
Access.prototype.refused = function (refusal) {
  if (this.isOpen()) return; // already asking
  this.keyName = null;
  this.showUsage(null);
  this.open(refusal.key ? "refused" : "needed", refusal.message);
};

// `why`: "needed" (no key), "refused" (the held key was refused, `detail`
// says why) or "change" (the reader pressed Key).
Access.prototype.open = function (why, detail) {
  if (!this.dialog) return;
  const held = access.key();
  i18n.set(this.$title, why === "change" && held ? "key.title.change" : "key.title.needed");
  if (why === "refused") this.showState("key.state.refused", { detail: detail || "" });
  else if (why === "change" && held) this.showState(this.keyName ? "key.state.inUse" : "key.state.inUseUnnamed", { name: this.keyName });
  else if (why === "forgotten") this.showState("key.state.forgotten");
  else this.showState(null);
  this.$forget.prop("hidden", !held);
  this.showError(null);
  this.setBusy(false);
  this.$input.val("");
  if (!this.dialog.open) {
    this.returnFocus = document.activeElement;
    this.dialog.showModal();
  }
  this.$input.trigger("focus");
};

Access.prototype.close = function () {
  if (this.isOpen()) this.dialog.close();
};

// The dialog closed (Cancel, Escape, or a key saved): the focus goes back.
Access.prototype.closed = function () {
  this.$input.val("");
  const back = this.returnFocus;
  this.returnFocus = null;
  if (back && back.isConnected && back !== document.body) back.focus();
  else $("#question").trigger("focus");
};

Access.prototype.showState = function (key, params) {
  if (key) i18n.set(this.$state, key, params);
  else this.$state.removeAttr("data-i18n data-i18n-params").text("");
  this.$state.prop("hidden", !key);
};

// `text` is an i18n text {key, params}, or null to hide the error.
Access.prototype.showError = function (text) {
  if (text) i18n.set(this.$error, text.key, text.params);
  else this.$error.removeAttr("data-i18n data-i18n-params").text("");
  this.$error.prop("hidden", !text);
  this.$input.attr("aria-invalid", text ? "true" : null);
};

Access.prototype.setBusy = function (busy) {
  this.$save.prop("disabled", busy);
  this.$input.prop("readonly", busy);
  if (busy) i18n.set(this.$save, "key.checking");
  else i18n.set(this.$save, "key.save");
};

// Checks the typed key with chatproxy (GET /api/usage) before keeping it:
// a refused key stays out of storage, and the reader sees why at once.
Access.prototype.save = async function () {
  const key = String(this.$input.val() || "").trim();
  if (!key) {
    this.showError({ key: "key.error.empty" });
    this.$input.trigger("focus");
    return;
  }
  this.setBusy(true);
  let usage = null;
  try {
    usage = await api.usage(this.options.usageUrl, key);
  } catch (error) {
    // 429: the key is good, only over a limit for now. Anything else: not kept.
    if (error.status !== 429) {
      this.setBusy(false);
      const detail = error.message || "";
      this.showError(error.status === 401 ? { key: "key.error.refused", params: { detail: detail } } : api.describe(error));
      this.$input.trigger("focus").trigger("select");
      return;
    }
  }
  const previous = access.key();
  access.save(key);
  this.setBusy(false);
  this.close();
  if (usage) this.showUsage(usage);
  this.options.announce(i18n.t("key.saved"));
  this.options.onChange(previous, key);
  if (!usage) this.refreshUsage();
};

// Forgets the key and asks for another at once.
Access.prototype.forget = function () {
  const previous = access.key();
  access.forget();
  this.keyName = null;
  this.showUsage(null);
  this.options.announce(i18n.t("key.forgottenStatus"));
  this.open("forgotten");
  this.options.onChange(previous, null);
};

/* ---------- Usage today ---------- */

// Asks the server for today's usage again (after an answer, a new key, ...).
Access.prototype.refreshUsage = async function () {
  if (this.keysMode && !access.key()) {
    this.showUsage(null);
    return;
  }
  const load = ++this.usageLoads;
  let usage;
  try {
    usage = await api.usage(this.options.usageUrl);
  } catch (error) {
    if (load === this.usageLoads && error.status === 401) this.showUsage(null);
    return; // keep what is shown; the next answer asks again
  }
  if (load === this.usageLoads) this.showUsage(usage);
};

// "Today: 12 requests · 3,456 of 100,000 tokens/day · $0.0123", and the
// per-minute limits under it. `usage` is /api/usage's answer, or null to hide.
Access.prototype.showUsage = function (usage) {
  this.usageLoads += usage ? 0 : 1; // a load still on its way must not bring it back
  if (!usage || !usage.today) {
    this.$usage.prop("hidden", true);
    this.showKeyName(null);
    return;
  }
  const key = usage.key || {};
  const today = usage.today;
  const open = !this.keysMode || key.name === "open";
  this.showKeyName(open ? null : key.name);
  const tokens = typeof key.tokens_per_day === "number"
    ? ["usage.tokensOf", { n: api.formatCount(today.total_tokens), limit: api.formatCount(key.tokens_per_day) }]
    : ["usage.tokens", { n: api.formatCount(today.total_tokens) }];
  const cost = typeof key.usd_per_day === "number"
    ? ["usage.costOf", { cost: api.formatCost(today.cost || 0), limit: api.formatCost(key.usd_per_day) }]
    : ["raw", { text: api.formatCost(today.cost || 0) }];
  // One span per part, so that a narrow sidebar wraps the line between parts.
  const parts = [[open ? "usage.todayAll" : "usage.today", { count: today.requests || 0 }], tokens, cost];
  this.$usageToday.empty();
  parts.forEach(([textKey, params], index) => {
    if (index) this.$usageToday.append(" · ");
    this.$usageToday.append(i18n.set($("<span>", { class: "usage-part" }), textKey, params));
  });
  const rpm = typeof key.rpm === "number" ? key.rpm : null;
  const tpm = typeof key.tpm === "number" ? key.tpm : null;
  if (rpm !== null || tpm !== null) {
    const limit = rpm !== null && tpm !== null ? "usage.limit.both" : rpm !== null ? "usage.limit.rpm" : "usage.limit.tpm";
    i18n.set(this.$usageLimits, limit, { rpm: api.formatCount(rpm), tpm: api.formatCount(tpm) });
    this.$usageLimits.prop("hidden", false);
  } else {
    this.$usageLimits.removeAttr("data-i18n data-i18n-params").text("").prop("hidden", true);
  }
  this.$usage.attr("data-key", open ? null : key.name).prop("hidden", false);
};

// The Key button's tooltip names the key in use.
Access.prototype.showKeyName = function (name) {
  this.keyName = name || null;
  if (!this.$button.length) return;
  if (name) i18n.setAttribute(this.$button, "title", "key.button.titleNamed", { name: name });
  else i18n.setAttribute(this.$button, "title", "key.button.title", null);
};
