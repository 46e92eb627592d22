/*
 * The console's Personas section: the files' personas, read-only, and those
 * made in the console (made, edited, deleted here; stored in the database and
 * offered by every worker within seconds). A persona made here has one system
 * message, the prompt; one made elsewhere with more keeps them unless edited.
 * Names, descriptions and prompts are shown with .text() only.
 */
import * as i18n from "./i18n.js";

const $ = window.jQuery;
const t = i18n.t;
const CONFIRM_MS = 4000;

// options: {urls, call(method, url, data) -> Promise}.
export function Personas(options) {
  this.options = options;
  this.list = [];
  this.editing = null;
  this.$list = $("#persona-list");
  this.$status = $("#personas-status");
  this.$form = $("#persona-editor");
  this.$error = $("#persona-editor-error");
  $("#new-persona").on("click", () => this.openEditor(null));
  $("#persona-editor-cancel").on("click", () => this.$form.prop("hidden", true));
  this.$form.on("submit", (event) => {
    event.preventDefault();
    this.save();
  });
}

Personas.prototype.refresh = function () {
  return this.options.call("GET", this.options.urls.personas).then(
    (list) => {
      this.list = list.data || [];
      this.render();
    },
    (error) => i18n.set(this.$status, "raw", { text: error.message || String(error.status) }),
  );
};

Personas.prototype.render = function () {
  this.$list.empty();
  for (const persona of this.list) this.$list.append(this.card(persona));
};

Personas.prototype.card = function (persona) {
  const $card = $("<article>", { class: "console-card persona-card" }).attr("data-persona-id", persona.id);
  const $title = $("<h3>").append($("<span>", { class: "persona-name" }).text(persona.name), " ");
  $("<span>", { class: "tag " + (persona.source === "file" ? "tag-admin" : "tag-active") })
    .text(t("console.personas." + persona.source))
    .appendTo($title);
  $card.append($title);
  const details = [persona.id, persona.model || t("console.personas.defaultModel"),
    t("console.personas.messages", { count: persona.messages.length })];
  $("<p>").text(details.join(" · ")).appendTo($card);
  if (persona.description) $("<p>", { class: "persona-description" }).text(persona.description).appendTo($card);
  const system = persona.messages.find((m) => m.role === "system") || persona.messages[0];
  if (system) $("<p>", { class: "persona-prompt" }).text(system.content).appendTo($card);
  if (persona.source === "console") {
    const $actions = $("<div>", { class: "key-actions" }).appendTo($card);
    $("<button>", { type: "button", class: "button button-small persona-edit" })
      .text(t("console.personas.edit.button"))
      .on("click", () => this.openEditor(persona))
      .appendTo($actions);
    $("<button>", { type: "button", class: "button button-small persona-delete" })
      .text(t("console.personas.delete"))
      .on("click", (event) => this.remove(persona, $(event.currentTarget)))
      .appendTo($actions);
  }
  return $card;
};

Personas.prototype.openEditor = function (persona) {
  this.editing = persona;
  const form = this.$form[0];
  form.reset();
  this.$error.text("").removeAttr("data-i18n");
  $(form.elements.id).prop("disabled", !!persona);
  if (persona) {
    i18n.set($("#persona-editor-title"), "console.personas.edit", { id: persona.id });
    $(form.elements.id).val(persona.id);
    $(form.elements.name).val(persona.name);
    $(form.elements.description).val(persona.description);
    $(form.elements.model).val(persona.model || "");
    const system = persona.messages.find((m) => m.role === "system");
    $(form.elements.prompt).val(system ? system.content : "");
  } else {
    i18n.set($("#persona-editor-title"), "console.personas.new");
  }
  this.$form.prop("hidden", false);
  $(persona ? form.elements.name : form.elements.id).trigger("focus");
};

Personas.prototype.save = function () {
  const form = this.$form[0];
  const editing = this.editing;
  const data = {};
  for (const field of ["name", "description", "model"]) {
    const value = $.trim($(form.elements[field]).val());
    if (value) data[field] = value;
  }
  const prompt = $(form.elements.prompt).val();
  const others = editing ? editing.messages.filter((m) => m.role !== "system") : [];
  data.messages = [{ role: "system", content: prompt }].concat(others);
  const id = editing ? editing.id : $.trim($(form.elements.id).val());
  const url = this.options.urls.personas;
  const request = editing
    ? this.options.call("PUT", url + "/" + encodeURIComponent(id), data)
    : this.options.call("POST", url, Object.assign({ id: id }, data));
  request.then(
    () => {
      this.$form.prop("hidden", true);
      i18n.set(this.$status, "console.personas.saved", { id: id });
      this.refresh();
    },
    (error) => i18n.set(this.$error, "raw", { text: error.message || String(error.status) }),
  );
};

Personas.prototype.remove = function (persona, $button) {
  if (!$button.data("armed")) {
    $button.data("armed", true).addClass("button-danger").text(t("console.personas.confirm"));
    setTimeout(() => {
      $button.data("armed", false).removeClass("button-danger").text(t("console.personas.delete"));
    }, CONFIRM_MS);
    return;
  }
  this.options.call("DELETE", this.options.urls.personas + "/" + encodeURIComponent(persona.id)).then(
    () => {
      i18n.set(this.$status, "console.personas.deleted", { id: persona.id });
      this.refresh();
    },
    (error) => i18n.set(this.$status, "raw", { text: error.message || String(error.status) }),
  );
};
