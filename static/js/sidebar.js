/*
 * The conversation list: a sidebar on wide screens, a drawer on phones.
 *
 * It lists the server's conversations (most recent first, filtered by title
 * with the search box), marks the open one, and renames, deletes and imports
 * conversations itself. Which conversation is open is conversation.js's
 * business: the list tells it through the callbacks given to
 * `new Sidebar({...})` in app.js.
 */
import * as i18n from "./i18n.js";
import * as api from "./api.js";

const $ = window.jQuery;
const SEARCH_DELAY = 200; // ms of quiet typing before the list is asked for again
const MAX_TITLE = 200;

// options: {conversations (an api.js Conversations), onSelect(id),
// onNew(), onRenamed(summary), onDeleted(id), onImported(conversation)}
export function Sidebar(options) {
  this.options = options;
  this.api = options.conversations;
  this.currentId = null;
  this.query = "";
  this.loads = 0; // answers to older list requests are dropped
  this.editing = false; // a rename or delete form is open: refreshes wait
  this.stale = false;
  this.searchTimer = 0;

  this.$sidebar = $("#sidebar");
  this.$list = $("#conversation-list");
  this.$note = $("#conversation-list-note");
  this.$search = $("#conversation-search");
  this.$toggle = $("#sidebar-toggle");
  this.$backdrop = $("#sidebar-backdrop");
  this.$importButton = $("#import-button");
  this.$importFile = $("#import-file");
  this.$importStatus = $("#import-status");
  this.itemTemplate = document.getElementById("conversation-item-template");
  // Below this width the list is a drawer (the same breakpoint as app.css).
  this.narrow = window.matchMedia("(max-width: 899px)");

  $("#new-conversation").on("click", () => {
    this.closeDrawer();
    options.onNew();
  });
  this.$search.on("input", () => {
    clearTimeout(this.searchTimer);
    this.searchTimer = setTimeout(() => this.search(this.$search.val()), SEARCH_DELAY);
  });
  this.$search.on("keydown", (event) => {
    if (event.key === "Enter") {
      clearTimeout(this.searchTimer);
      this.search(this.$search.val());
    }
  });
  this.$list.on("click", ".conversation-link", (event) => this.select(event));
  this.$list.on("click", ".rename-button", (event) => this.startRename($(event.currentTarget).closest("li")));
  this.$list.on("click", ".delete-button", (event) => this.confirmDelete($(event.currentTarget).closest("li")));
  this.$toggle.on("click", () => (this.isDrawerOpen() ? this.closeDrawer() : this.openDrawer()));
  $("#sidebar-close").on("click", () => this.closeDrawer(true));
  this.$backdrop.on("click", () => this.closeDrawer(true));
  this.$importButton.on("click", () => this.$importFile.trigger("click"));
  this.$importFile.on("change", () => this.importFile());
  // Leaving the phone layout with the drawer open must not leave the page locked.
  this.narrow.addEventListener("change", () => this.closeDrawer());
}

/* ---------- The list ---------- */

Sidebar.prototype.search = function (text) {
  const query = text.trim();
  if (query === this.query) return;
  this.query = query;
  this.refresh();
};

// Asks the server for the list again (after an answer, a rename, ...).
Sidebar.prototype.refresh = async function () {
  if (this.editing) {
    this.stale = true; // re-rendering now would throw away what the reader is typing
    return;
  }
  const load = ++this.loads;
  if (!this.$list.children().length) this.showNote("list.loading");
  let summaries;
  try {
    summaries = await this.api.list(this.query);
  } catch (error) {
    if (load === this.loads) this.showNote("list.failed", { detail: api.describe(error) });
    return;
  }
  if (load !== this.loads || this.editing) {
    if (this.editing) this.stale = true;
    return;
  }
  this.render(summaries);
};

// Empties the list at once (another access key has other conversations);
// answers to requests still on their way are dropped.
Sidebar.prototype.clear = function () {
  this.closeEditors();
  this.loads += 1;
  this.$list.empty();
  this.showNote(null);
};

Sidebar.prototype.render = function (summaries) {
  this.$list.empty();
  summaries.forEach((summary) => this.$list.append(this.item(summary)));
  if (summaries.length) this.showNote(null);
  else if (this.query) this.showNote("list.noMatch", { q: this.query });
  else this.showNote("list.empty");
};

Sidebar.prototype.item = function (summary) {
  const $item = $(this.itemTemplate.content.firstElementChild.cloneNode(true));
  $item.attr("data-id", summary.id).data("summary", summary);
  $item.find(".conversation-link").attr("href", "#c=" + encodeURIComponent(summary.id));
  this.showTitle($item, summary.title);
  this.markCurrent($item);
  i18n.translate($item[0]);
  return $item;
};

Sidebar.prototype.showTitle = function ($item, title) {
  const $title = $item.find(".conversation-item-title");
  if (title) {
    $title.removeAttr("data-i18n").text(title);
    $item.find(".conversation-link").attr("title", title);
  } else {
    i18n.set($title, "item.untitled");
    $item.find(".conversation-link").removeAttr("title");
  }
};

Sidebar.prototype.markCurrent = function ($item) {
  const current = $item.attr("data-id") === this.currentId;
  $item.toggleClass("current", current);
  const $link = $item.find(".conversation-link");
  if (current) $link.attr("aria-current", "page");
  else $link.removeAttr("aria-current");
};

// The open conversation (null: a new one, not yet on the server).
Sidebar.prototype.setCurrent = function (id) {
  this.currentId = id;
  this.$list.children().each((i, element) => this.markCurrent($(element)));
};

Sidebar.prototype.showNote = function (key, params) {
  if (key) i18n.set(this.$note, key, params);
  else this.$note.removeAttr("data-i18n").text("");
  this.$note.prop("hidden", !key);
};

Sidebar.prototype.select = function (event) {
  // Ctrl/Cmd/Shift-click and middle-click open the link as the browser would.
  if (event.ctrlKey || event.metaKey || event.shiftKey || event.altKey || event.button) return;
  event.preventDefault();
  const id = $(event.currentTarget).closest("li").attr("data-id");
  this.closeDrawer();
  this.options.onSelect(id);
};

/* ---------- Rename and delete, inline ---------- */

// A small form in place of the entry: Enter saves, Escape cancels.
Sidebar.prototype.startRename = function ($item) {
  this.closeEditors();
  const summary = $item.data("summary");
  this.editing = true;
  const $form = $("<form>", { class: "item-form rename-form" });
  const inputId = "rename-" + Math.random().toString(36).slice(2);
  const $label = $("<label>", { class: "visually-hidden", for: inputId });
  const $input = $("<input>", { type: "text", id: inputId, class: "rename-input", maxlength: MAX_TITLE, autocomplete: "off" })
    .val(summary.title || "");
  const $save = $("<button>", { type: "submit", class: "button button-small button-accent save-button" });
  const $cancel = $("<button>", { type: "button", class: "button button-small cancel-button" });
  const $error = $("<p>", { class: "item-error", role: "alert", hidden: true });
  i18n.set($label, "item.title.label");
  i18n.set($save, "item.save");
  i18n.set($cancel, "item.cancel");
  $form.append($label, $input, $("<div>", { class: "item-form-buttons" }).append($save, $cancel), $error);
  $item.addClass("editing").append($form);

  const close = () => this.closeEditors($item.find(".rename-button"));
  $cancel.on("click", close);
  $input.on("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      close();
    }
  });
  $form.on("submit", async (event) => {
    event.preventDefault();
    const title = $input.val().trim();
    if (!title || title === summary.title) {
      close();
      return;
    }
    $form.find("button, input").prop("disabled", true);
    try {
      const renamed = await this.api.rename(summary.id, title);
      const updated = Object.assign({}, summary, renamed || { title: title });
      $item.data("summary", updated);
      this.showTitle($item, updated.title);
      close();
      this.options.onRenamed(updated);
    } catch (error) {
      $form.find("button, input").prop("disabled", false);
      i18n.set($error, "item.renameFailed", { detail: api.describe(error) });
      $error.prop("hidden", false);
      $input.trigger("focus");
    }
  });
  $input.trigger("focus").trigger("select");
};

// Deleting asks once more, in place, before anything is sent.
Sidebar.prototype.confirmDelete = function ($item) {
  this.closeEditors();
  const summary = $item.data("summary");
  this.editing = true;
  const $box = $("<div>", { class: "item-form confirm-delete", role: "group" });
  const $question = $("<p>", { class: "confirm-text" });
  const $delete = $("<button>", { type: "button", class: "button button-small button-danger confirm-delete-button" });
  const $cancel = $("<button>", { type: "button", class: "button button-small cancel-button" });
  const $error = $("<p>", { class: "item-error", role: "alert", hidden: true });
  i18n.set($question, "item.confirmDelete");
  i18n.set($delete, "item.delete");
  i18n.set($cancel, "item.cancel");
  $box.append($question, $("<div>", { class: "item-form-buttons" }).append($delete, $cancel), $error);
  $item.addClass("editing").append($box);

  const close = () => this.closeEditors($item.find(".delete-button"));
  $cancel.on("click", close);
  $box.on("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      close();
    }
  });
  $delete.on("click", async () => {
    $box.find("button").prop("disabled", true);
    try {
      await this.api.remove(summary.id);
    } catch (error) {
      if (error.status !== 404) {
        $box.find("button").prop("disabled", false);
        i18n.set($error, "item.deleteFailed", { detail: api.describe(error) });
        $error.prop("hidden", false);
        return;
      }
      // already gone: the same outcome as a delete
    }
    this.editing = false;
    $item.remove();
    this.options.onDeleted(summary.id);
    this.refresh();
  });
  $cancel.trigger("focus");
};

// Closes any open rename or delete form; `$focus` gets the focus back.
Sidebar.prototype.closeEditors = function ($focus) {
  this.$list.find(".item-form").remove();
  this.$list.children(".editing").removeClass("editing");
  const wasEditing = this.editing;
  this.editing = false;
  if ($focus && $focus.length) $focus.trigger("focus");
  if (wasEditing && this.stale) {
    this.stale = false;
    this.refresh();
  }
};

/* ---------- Import ---------- */

Sidebar.prototype.importFile = async function () {
  const file = this.$importFile[0].files[0];
  this.$importFile.val(""); // choosing the same file again still fires "change"
  if (!file) return;
  this.showImportStatus("import.busy", { name: file.name });
  let text;
  try {
    text = await file.text();
    JSON.parse(text);
  } catch (e) {
    this.showImportStatus("import.notJson", { name: file.name }, true);
    return;
  }
  let conversation;
  try {
    conversation = await this.api.importText(text);
  } catch (error) {
    this.showImportStatus("import.failed", { name: file.name, detail: api.describe(error) }, true);
    return;
  }
  this.showImportStatus("import.done", { title: conversation.title || file.name });
  this.closeDrawer();
  this.options.onImported(conversation);
  this.refresh();
};

Sidebar.prototype.showImportStatus = function (key, params, failed) {
  clearTimeout(this.importTimer);
  i18n.set(this.$importStatus, key, params);
  this.$importStatus.toggleClass("failed", !!failed);
  if (!failed && key === "import.done") {
    this.importTimer = setTimeout(() => {
      this.$importStatus.removeAttr("data-i18n").text("");
    }, 6000);
  }
};

/* ---------- The drawer (phones) ---------- */

Sidebar.prototype.isDrawerOpen = function () {
  return $(document.body).hasClass("drawer-open");
};

Sidebar.prototype.openDrawer = function () {
  $(document.body).addClass("drawer-open");
  this.$toggle.attr("aria-expanded", "true");
  $("#new-conversation").trigger("focus");
};

// `returnFocus`: put the focus back on the button that opened the drawer.
Sidebar.prototype.closeDrawer = function (returnFocus) {
  if (!this.isDrawerOpen()) return false;
  $(document.body).removeClass("drawer-open");
  this.$toggle.attr("aria-expanded", "false");
  if (returnFocus) this.$toggle.trigger("focus");
  return true;
};
