/*
 * One question and its answer as the page shows them (a clone of the
 * template's #turn-template): the answer drawn as Markdown while it arrives,
 * the model's reasoning before it (a block open while the model thinks,
 * folded once the answer starts, "Thought for 12 s · 345 reasoning tokens"),
 * its state (thinking, answering, done, stopped, error) and notes, the tokens
 * and cost it took, Copy, and the Retry and Regenerate buttons. A Turn is also
 * how a question the server keeps is shown again (`restore`), with its
 * versions: Edit opens the question in place to send a new version, and
 * `< 2 / 2 >` moves between the versions of the question or of its answer
 * (`showBranches`).
 */
import * as i18n from "./i18n.js";
import { formatCount, formatCost } from "./api.js";
import { state, show, announce, keepFollowing } from "./page.js";
import { renderMarkdown, decorateAnswer } from "./markdown.js";
import { copyText, flash } from "./clipboard.js";

const $ = window.jQuery;
const t = i18n.t;
const turnTemplate = document.getElementById("turn-template");

// `persona` is {id, name} or null; `again(turn)` is what Retry and
// Regenerate do (conversation.js answers the question again),
// `again(turn, "continue")` what Continue does, `again(turn, "edit", text)`
// what Save & send does with an edited question, and
// `again(turn, "switch", messageId)` what the version arrows do.
export function Turn(question, model, persona, again) {
  this.question = question;
  this.model = model;
  this.persona = persona;
  this.markdown = ""; // raw answer as received: what Copy copies
  this.reasoning = ""; // the model's reasoning as received
  this.reasoningDrawn = -1; // the length of the reasoning drawn last
  this.thinkingSince = 0; // performance.now() at its first piece
  this.thoughtSeconds = null; // how long it streamed before the answer started
  this.reasoningTokens = 0; // as the upstream counted them, if it did
  this.finished = false;
  this.frame = 0;
  this.view = state.view;
  this.controller = new AbortController();
  this.questionId = null; // the ids the server keeps them under, once known
  this.answerId = null;

  this.$el = $(turnTemplate.content.firstElementChild.cloneNode(true));
  this.$answer = this.$el.find(".answer");
  this.$body = this.$el.find(".answer-body");
  this.$reasoning = this.$el.find(".reasoning");
  this.$reasoningSummary = this.$el.find(".reasoning-summary");
  this.$reasoningBody = this.$el.find(".reasoning-body");
  this.$status = this.$el.find(".answer-status");
  this.$notes = this.$el.find(".answer-notes");
  this.$usage = this.$el.find(".answer-usage");
  this.$copy = this.$el.find(".copy-button");
  this.$retry = this.$el.find(".retry-button");
  this.$regenerate = this.$el.find(".regenerate-button");

  this.$el.find(".question-text").text(question);
  this.$el.find(".answer-model").text(model || "");
  this.$el.find(".answer-persona").text(persona ? persona.name : "");
  i18n.translate(this.$el[0]);
  this.$copy.on("click", this.copy.bind(this));
  this.$retry.on("click", () => again(this));
  this.$regenerate.on("click", () => again(this));
  this.$el.find(".continue-button").on("click", () => again(this, "continue"));

  this.$el.data("turn", this); // conversation.js finds the Turn of a transcript's element
  this.$questionText = this.$el.find(".question-text");
  this.$questionTools = this.$el.find(".question-tools");
  this.$editor = this.$el.find(".question-editor");
  this.$editText = this.$el.find(".question-edit-text");
  this.$edit = this.$el.find(".edit-button");
  this.$edit.on("click", () => this.openEditor());
  this.$el.find(".cancel-edit-button").on("click", () => this.closeEditor());
  this.$editor.on("submit", (event) => {
    event.preventDefault();
    const text = this.$editText.val();
    if (text.trim() && !state.current) again(this, "edit", text);
  });
  this.$editText.on("keydown", (event) => {
    if (event.key === "Escape") this.closeEditor();
    else if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) this.$editor.trigger("submit");
  });
  this.$questionVersions = this.$el.find(".question-versions");
  this.$answerVersions = this.$el.find(".answer-versions");
  [this.$questionVersions, this.$answerVersions].forEach(($nav) => {
    const go = (step) => {
      const versions = $nav.data("versions");
      const wanted = versions && versions.siblings[versions.index + step];
      if (wanted !== undefined) again(this, "switch", wanted);
    };
    $nav.find(".branch-previous").on("click", () => go(-1));
    $nav.find(".branch-next").on("click", () => go(1));
  });
}

// The server's ids and versions of this question and its answer (each a
// message of GET /api/conversations/ID, with `siblings` and
// `sibling_index`; `answer` may be null): Edit is offered, and `< i / n >`
// where there are several versions.
Turn.prototype.showBranches = function (question, answer) {
  this.questionId = question.id;
  this.answerId = answer ? answer.id : null;
  this.$el.attr("data-question-id", question.id); // which version is shown, for a look in devtools
  if (answer) this.$answer.attr("data-message-id", answer.id);
  else this.$answer.removeAttr("data-message-id");
  this.$edit.prop("hidden", false);
  showVersions(this.$questionVersions, question);
  showVersions(this.$answerVersions, answer);
};

function showVersions($nav, message) {
  const siblings = (message && message.siblings) || [];
  if (siblings.length < 2) {
    $nav.prop("hidden", true).removeData("versions");
    return;
  }
  const index = Math.max(0, siblings.indexOf(message.id));
  $nav.data("versions", { siblings: siblings, index: index });
  show($nav.find(".branch-position"), "branch.position", { index: index + 1, count: siblings.length });
  $nav.find(".branch-previous").prop("disabled", index === 0);
  $nav.find(".branch-next").prop("disabled", index === siblings.length - 1);
  $nav.prop("hidden", false);
}

// The question's images and files (elements made by attachments.js).
Turn.prototype.showAttachments = function (elements) {
  const $box = this.$el.find(".question-attachments");
  $box.empty().append(elements).prop("hidden", !elements.length);
};

// Edit: the question in a box in its place, with Save & send and Cancel.
Turn.prototype.openEditor = function () {
  this.$editText.val(this.question);
  this.$questionText.prop("hidden", true);
  this.$questionTools.prop("hidden", true);
  this.$editor.prop("hidden", false);
  const box = this.$editText[0];
  box.style.height = "";
  box.style.height = Math.min(box.scrollHeight + 2, 320) + "px";
  box.focus();
  box.setSelectionRange(box.value.length, box.value.length);
};

Turn.prototype.closeEditor = function () {
  this.$editor.prop("hidden", true);
  this.$questionText.prop("hidden", false);
  this.$questionTools.prop("hidden", false);
  this.$edit.trigger("focus");
};

// The server keeps this question (it answered with the conversation's id):
// Retry and Regenerate may act on it.
Turn.prototype.markStored = function () {
  this.$el.attr("data-stored", "true");
};

Turn.prototype.append = function (text) {
  if (!text || this.finished) return;
  if (this.markdown === "") {
    this.setState("streaming", "answer.answering");
    this.endThinking(true);
  }
  this.markdown += text;
  this.scheduleRender();
};

// A piece of the model's reasoning: the block opens with the first one.
Turn.prototype.appendReasoning = function (text) {
  if (!text || this.finished) return;
  if (this.reasoning === "") {
    this.thinkingSince = performance.now();
    this.$reasoning.prop("hidden", false).prop("open", true).attr("data-state", "thinking");
  }
  this.reasoning += text;
  this.scheduleRender();
};

// The reasoning has ended (the answer starts, or the turn ends): it says for
// how long, and folds away when `fold` (the reader opens it with a click).
Turn.prototype.endThinking = function (fold) {
  if (this.reasoning === "" || this.$reasoning.attr("data-state") === "done") return;
  if (this.thoughtSeconds === null) this.thoughtSeconds = (performance.now() - this.thinkingSince) / 1000;
  this.$reasoning.attr("data-state", "done");
  if (fold) this.$reasoning.prop("open", false);
  this.showThought();
};

// "Thought for 12 s · 345 reasoning tokens"; "Reasoning" when the time is not known.
Turn.prototype.showThought = function () {
  const seconds = this.thoughtSeconds;
  const what = seconds === null ? { key: "reasoning.shown" } : { key: "reasoning.thoughtFor", params: { seconds: formatSeconds(seconds) } };
  if (!this.reasoningTokens) {
    show(this.$reasoningSummary, what.key, what.params);
    return;
  }
  const count = this.reasoningTokens;
  const tokens = { key: "reasoning.tokens", params: { count: count, n: formatCount(count) } };
  show(this.$reasoningSummary, "reasoning.withTokens", { what: what, tokens: tokens });
};

function formatSeconds(seconds) {
  return seconds < 10 ? seconds.toFixed(1) : String(Math.round(seconds));
}

// The upstream's count of reasoning tokens (OpenAI's usage.completion_tokens_details).
function reasoningTokensOf(usage) {
  const details = usage && usage.completion_tokens_details;
  const count = details && details.reasoning_tokens;
  return typeof count === "number" && count > 0 ? count : 0;
}

// Pieces can arrive faster than the screen refreshes: render at most once a frame.
Turn.prototype.scheduleRender = function () {
  if (this.frame) return;
  this.frame = requestAnimationFrame(() => {
    this.frame = 0;
    this.render(false);
  });
};

Turn.prototype.render = function (final) {
  keepFollowing(() => this.draw(final));
};

Turn.prototype.draw = function (final) {
  // innerHTML, not jQuery's .html(): .html() runs any <script> it is given.
  // DOMPurify already removed them; this is a second lock on the same door.
  // The reasoning goes through the same renderer and sanitizer as the answer.
  if (this.reasoning.length !== this.reasoningDrawn) {
    this.$reasoningBody[0].innerHTML = renderMarkdown(this.reasoning);
    decorateAnswer(this.$reasoningBody[0], final); // formulas and code, as in the answer
    this.reasoningDrawn = this.reasoning.length;
  }
  this.$body[0].innerHTML = renderMarkdown(this.markdown);
  decorateAnswer(this.$body[0], final);
};

// Continue: the answer goes on where it was cut off; what arrives is appended.
Turn.prototype.resume = function () {
  this.finished = false;
  this.controller = new AbortController();
  this.$notes.empty();
  this.$answer.attr("aria-busy", "true");
  this.$copy.prop("disabled", true);
  this.setState("streaming", "answer.continuing");
};

// `status` is an i18n key, or "" for none.
Turn.prototype.setState = function (name, status) {
  this.$answer.attr("data-state", name);
  show(this.$status, status);
};

// `text` is an i18n text {key, params}, or a key.
Turn.prototype.addNote = function (kind, text) {
  if (typeof text === "string") text = { key: text };
  const $note = $("<p>", { class: "note note-" + kind });
  show($note, text.key, text.params);
  $note.appendTo(this.$notes);
};

// Ends the turn whichever way it ended: done, stopped or failed.
Turn.prototype.finish = function (name, status) {
  if (this.finished) return false;
  this.finished = true;
  if (this.frame) cancelAnimationFrame(this.frame);
  this.frame = 0;
  this.reasoningDrawn = -1; // drawn once more, its code highlighted for good
  this.draw(true);
  this.endThinking(false); // a turn that ended while it thought keeps it open
  this.setState(name, status);
  this.$answer.attr("aria-busy", "false");
  this.$copy.prop("disabled", this.markdown === "");
  return true;
};

Turn.prototype.done = function (info) {
  keepFollowing(() => this.showDone(info || {}));
};

Turn.prototype.showDone = function (info) {
  if (typeof info.reasoning_seconds === "number") this.thoughtSeconds = info.reasoning_seconds;
  this.reasoningTokens = reasoningTokensOf(info.usage);
  if (!this.finish("done", "")) return;
  if (this.reasoning) this.showThought(); // with the server's time and tokens
  if (info.model) this.$el.find(".answer-model").text(info.model);
  this.showFinishReason(info.finish_reason);
  if (this.markdown === "") this.addNote("info", "note.empty");
  if (info.stored === false) this.addNote("warning", "note.notYetStored");
  if (info.usage) this.showUsage(info.usage, info.cost);
  announce(t("status.finished"));
};

Turn.prototype.showFinishReason = function (reason) {
  if (reason === "length") {
    this.addNote("warning", "note.cutOff");
  } else if (reason && reason !== "stop") {
    this.addNote("warning", { key: "note.endedEarly", params: { reason: reason } });
  }
};

// "Tokens: 8 in · 95 out · $0.000058"; a model without a price has no cost.
Turn.prototype.showUsage = function (usage, cost) {
  const priced = typeof cost === "number";
  const params = { in: formatCount(usage.prompt_tokens), out: formatCount(usage.completion_tokens) };
  if (priced) params.cost = formatCost(cost);
  show(this.$usage, priced ? "answer.usageCost" : "answer.usage", params);
  i18n.setAttribute(this.$usage, "title", priced ? "answer.usage.priced" : "answer.usage.unpriced");
};

Turn.prototype.stop = function () {
  keepFollowing(() => {
    if (!this.finish("stopped", "answer.stopped")) return;
    this.addNote("info", this.markdown ? "note.stoppedPartial" : "note.stoppedEmpty");
    announce(t("status.stopped"));
  });
};

// Keeps whatever part of the answer already arrived and says what went wrong
// under it. `message` is an i18n text {key, params}.
Turn.prototype.fail = function (message) {
  keepFollowing(() => {
    if (!this.finish("error", "answer.error")) return;
    this.addNote("error", message);
    announce(t(message.key, message.params));
  });
};

// Shows a question and its answer as the server keeps them (`answer` may
// be null: the question failed, or its answer never came).
Turn.prototype.restore = function (question, answer) {
  this.markStored();
  if (answer) {
    this.markdown = answer.content || "";
    if (answer.reasoning) {
      this.reasoning = answer.reasoning;
      this.thoughtSeconds = typeof answer.reasoning_seconds === "number" ? answer.reasoning_seconds : null;
      this.reasoningTokens = reasoningTokensOf(answer.usage);
      // Folded, unless it is all there is.
      this.$reasoning.prop("hidden", false).prop("open", this.markdown === "").attr("data-state", "done");
      this.showThought();
    }
    if (answer.model) this.$el.find(".answer-model").text(answer.model);
    if (answer.status === "interrupted") {
      this.finish("stopped", "answer.interrupted");
      this.addNote("info", this.markdown ? "note.interruptedPartial" : "note.interruptedEmpty");
    } else if (answer.status === "error") {
      this.finish("error", "answer.error");
      this.addNote("error", storedError(answer));
    } else if (answer.status === "streaming") {
      this.finish("stopped", "answer.streaming");
      this.addNote("info", "note.streaming");
    } else {
      this.finish("done", "");
      this.showFinishReason(answer.finish_reason);
      if (this.markdown === "") this.addNote("info", "note.empty");
    }
    if (answer.usage) this.showUsage(answer.usage, answer.cost);
  } else if (question.status === "error") {
    this.finish("error", "answer.error");
    this.addNote("error", storedError(question));
  } else {
    this.finish("stopped", "");
    this.addNote("info", "note.unanswered");
  }
};

// The error the server kept with a message: its own words, in its language.
function storedError(message) {
  const text = (message.error && message.error.message) || t("error.unknown");
  return { key: "raw", params: { text: text } };
}

Turn.prototype.copy = function () {
  const $button = this.$copy;
  copyText(this.markdown).then(
    () => flash($button, "answer.copied", "answer.copy"),
    () => flash($button, "answer.copyFailed", "answer.copy"),
  );
};
