/*
 * The conversation view: the transcript of the open conversation and the
 * questions asked in it.
 *
 * The server keeps conversations: the first question of a new one gets an id
 * (the X-Conversation-Id response header), which the page then sends back with
 * each question, keeps in the URL (#c=<id>) and in localStorage, and uses to
 * load the conversation again after a reload. This module shows and loads
 * conversations, follows Back and Forward, shows the conversation bar (title,
 * exports) and the totals (totals.js), and asks: a new question, Retry and Regenerate,
 * a question edited (a new version beside the old one); and it moves between
 * the versions of a turn (the server's branches).
 * The list of conversations is sidebar.js's; it tells app.js, which tells this.
 */
import * as i18n from "./i18n.js";
import * as api from "./api.js";
import { config, conversations, state, announce, scrollToBottom } from "./page.js";
import { Turn } from "./turn.js";
import { streamAnswer } from "./sse.js";
import * as attachments from "./attachments.js";
import * as composer from "./composer.js";
import * as branches from "./branches.js";
import { showTotals } from "./totals.js";

const $ = window.jQuery;
const t = i18n.t;
const STORAGE_KEY = "chatproxy.conversation"; // the conversation open last

const $transcript = $("#transcript");
const $conversationBar = $("#conversation-bar");
const $conversationTitle = $("#conversation-title");
const emptyState = document.getElementById("empty-state").cloneNode(true);

let sidebar = null; // the conversation list (sidebar.js)
let keyAccess = null; // the access key and the usage line (access.js)
let continued = null; // the Turn whose answer Continue is adding to

// Makes the view work, with the conversation list and the key's access.
export function start(parts) {
  sidebar = parts.sidebar;
  keyAccess = parts.keyAccess;
  $(".export-link").on("click", function (event) {
    // Ctrl/Cmd/Shift-click and middle-click do what the browser does with a link.
    if (event.ctrlKey || event.metaKey || event.shiftKey || event.altKey || event.button) return;
    event.preventDefault();
    exportConversation(this.id === "export-json" ? "json" : "md");
  });
  window.addEventListener("popstate", followLocation);
  window.addEventListener("hashchange", followLocation);
}

/* ---------- Where the open conversation is kept ---------- */

export function conversationFromHash() {
  const match = /^#c=(.+)$/.exec(window.location.hash);
  if (!match) return null;
  try {
    return decodeURIComponent(match[1]);
  } catch (e) {
    return null;
  }
}

// Puts the open conversation in the URL: "push" makes a history entry (Back
// returns to the one before), "replace" does not.
function navigate(id, mode) {
  if (conversationFromHash() === id) return;
  const url = window.location.pathname + window.location.search + (id ? "#c=" + encodeURIComponent(id) : "");
  if (mode === "push") history.pushState(null, "", url);
  else history.replaceState(null, "", url);
}

function remember(id) {
  try {
    if (id) window.localStorage.setItem(STORAGE_KEY, id);
    else window.localStorage.removeItem(STORAGE_KEY);
  } catch (e) {
    // storage may be off: the URL still holds the conversation
  }
}

export function remembered() {
  try {
    return window.localStorage.getItem(STORAGE_KEY);
  } catch (e) {
    return null;
  }
}

// Makes `id` the open conversation, without loading it (what the page
// shows is already that conversation, or about to be).
function setConversation(id, mode) {
  state.conversationId = id;
  remember(id);
  if (mode) navigate(id, mode);
  sidebar.setCurrent(id);
  if (!id) showConversationBar(null);
}

// The server named the conversation an answer belongs to: the first answer
// of a new conversation tells the page its id.
function adoptConversation(turn, id) {
  turn.markStored();
  if (turn.view !== state.view || state.conversationId === id) return;
  setConversation(id, "replace");
  sidebar.refresh(); // it is on the list now, titled after its first question
}

// Stops an answer still coming for the conversation being left.
export function abandonCurrent() {
  if (!state.current) return;
  state.current.controller.abort();
  setBusy(null);
}

function clearTranscript() {
  $transcript.empty();
}

// The empty page of a new conversation; `noteKey` says why, if it is not the reader's choice.
function showEmptyState(noteKey) {
  const element = emptyState.cloneNode(true);
  const $note = $(element).find("#empty-note");
  if (noteKey) i18n.set($note, noteKey);
  $note.prop("hidden", !noteKey);
  i18n.translate(element);
  $transcript.empty().append(element);
}

// `mode`: how to record it in the history ("push", "replace", or null: already there).
export function startNewConversation(mode, noteKey) {
  abandonCurrent();
  state.view += 1;
  setConversation(null, mode);
  showEmptyState(noteKey);
  showTotals(null);
  announce(t("status.new"));
  composer.focus();
}

export async function openConversation(id, mode) {
  abandonCurrent();
  state.loadFailed = null;
  const view = ++state.view;
  setConversation(id, mode);
  clearTranscript();
  showTotals(null);
  showConversationBar(null);
  const $loading = $("<p>", { class: "transcript-note" });
  i18n.set($loading, "conversation.loading");
  $transcript.append($loading);
  let conversation;
  try {
    conversation = await conversations.get(id);
  } catch (error) {
    if (view !== state.view) return;
    if (error.status === 404) {
      startNewConversation("replace", "conversation.missing");
      sidebar.refresh();
    } else {
      showLoadError(id, error);
    }
    return;
  }
  if (view !== state.view) return;
  showConversation(conversation);
  announce(t("status.loaded"));
}

function showLoadError(id, error) {
  state.loadFailed = id;
  const $note = $("<div>", { class: "transcript-note note note-error" });
  const $text = $("<span>");
  i18n.set($text, "conversation.failed", { detail: api.describe(error) });
  const $again = $("<button>", { type: "button", class: "button button-small" });
  i18n.set($again, "conversation.retryLoad");
  $again.on("click", () => openConversation(id, null));
  $transcript.empty().append($note.append($text, " ", $again));
}

// Draws a whole conversation as the server keeps it (after a load or an
// import): its current branch. `place`: where the reader was, kept (after
// choosing a version: branches.js).
export function showConversation(conversation, place) {
  const scrolled = window.scrollY;
  state.view += 1;
  setConversation(conversation.id, conversation.id === conversationFromHash() ? null : "push");
  clearTranscript();
  const messages = (conversation.messages || []).filter((message) => message.role !== "system");
  messages.forEach((message, index) => {
    if (message.role !== "user") return; // an answer is drawn with its question
    const next = messages[index + 1];
    const answer = next && next.role === "assistant" ? next : null;
    const turn = new Turn(message.content, (answer && answer.model) || message.model || "", null, regenerate);
    turn.restore(message, answer);
    turn.showAttachments(attachments.storedElements(message.attachments, config.attachmentsUrl));
    turn.showBranches(message, answer);
    $transcript.append(turn.$el);
  });
  if (!$transcript.children().length) showEmptyState(null);
  composer.applyPickers(conversation);
  showConversationDetails(conversation);
  if (place) {
    branches.returnTo(place, scrolled);
    return;
  }
  scrollToBottom();
  composer.focus();
}

// What the server says about the open conversation now: title, totals,
// which answer can be regenerated.
function showConversationDetails(conversation) {
  showConversationBar(conversation);
  showTotals(conversation);
  showTurnActions(conversation);
  branches.showBranches(conversation);
}

export function showConversationBar(conversation) {
  if (!conversation) {
    $conversationBar.prop("hidden", true);
    return;
  }
  if (conversation.title) $conversationTitle.removeAttr("data-i18n").text(conversation.title);
  else i18n.set($conversationTitle, "item.untitled");
  $("#export-md").attr("href", conversations.exportUrl(conversation.id, "md"));
  $("#export-json").attr("href", conversations.exportUrl(conversation.id, "json"));
  showExportStatus(null);
  $conversationBar.prop("hidden", false);
}

// The export links are fetched with the access key in a header (a plain
// link would send none, and a key in the URL would end up in logs) and
// saved under the name the server gives (Content-Disposition).
async function exportConversation(format) {
  const id = state.conversationId;
  if (!id) return;
  showExportStatus(null);
  let file;
  try {
    file = await conversations.download(id, format);
  } catch (error) {
    if (id === state.conversationId) showExportStatus({ key: "conversation.exportFailed", params: { detail: api.describe(error) } });
    return;
  }
  const url = URL.createObjectURL(file.blob);
  const link = $("<a>", { href: url, download: file.name, class: "visually-hidden" }).appendTo(document.body);
  link[0].click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

function showExportStatus(text) {
  const $status = $("#export-status");
  if (text) i18n.set($status, text.key, text.params);
  else $status.removeAttr("data-i18n data-i18n-params").text("");
}

// Regenerate on the last answer, or Retry on the last question when it has
// none: the server can answer its conversation's last question again.
function showTurnActions(conversation) {
  $transcript.find(".turn-action").prop("hidden", true);
  const messages = (conversation.messages || []).filter((message) => message.role !== "system");
  const last = messages[messages.length - 1];
  const $turn = $transcript.children(".turn[data-stored]").last();
  if (!last || !$turn.length) return;
  $turn.find(last.role === "assistant" ? ".regenerate-button" : ".retry-button").prop("hidden", false);
  // An answer cut off (max_tokens, or interrupted) can go on: Continue.
  const cutOff = last.finish_reason === "length" || last.status === "interrupted";
  $turn.find(".continue-button").prop("hidden", !(last.role === "assistant" && last.content && cutOff));
  if (continued && last.role === "assistant" && last.usage) {
    continued.showUsage(last.usage, last.cost); // both requests', as the server sums them
  }
  continued = null;
}

// After an answer: the server's totals and title, and the list in its new order.
async function refreshConversation() {
  const view = state.view;
  const id = state.conversationId;
  sidebar.refresh();
  if (!id) return;
  let conversation;
  try {
    conversation = await conversations.get(id);
  } catch (error) {
    return; // keep what is shown; the next answer tries again
  }
  if (view === state.view && id === state.conversationId) showConversationDetails(conversation);
}

// Back and Forward (and a hand-edited #c=) move between conversations.
function followLocation() {
  const id = conversationFromHash();
  if (id === state.conversationId) return;
  if (id) openConversation(id, null);
  else startNewConversation(null);
}

/* ---------- Asking ---------- */

function setBusy(turn) {
  state.current = turn;
  composer.showBusy(!!turn);
  $transcript.find(".turn-action, .branch-control, .save-edit-button").prop("disabled", !!turn);
}

// Streams `turn`'s answer from `url`, then (`after()`, if given) asks the
// server what changed.
function answer(turn, url, payload, after) {
  setBusy(turn);
  $transcript.find(".turn-action").prop("hidden", true);
  $transcript.find(".note-transient").remove();
  announce(t("status.sent"));
  const hooks = {
    onConversation: (id) => adoptConversation(turn, id),
    // Deleted meanwhile (another tab?): the next question starts a new conversation.
    onGone: () => {
      if (turn.view === state.view) setConversation(null, "replace");
    },
  };
  streamAnswer(turn, url, payload, hooks).finally(() => {
    if (state.current === turn) setBusy(null);
    keyAccess.refreshUsage();
    if (turn.view !== state.view) return;
    if (after) after();
    refreshConversation();
  });
}

export function ask(question, model, persona, attached) {
  const turn = new Turn(question, model, persona, regenerate);
  turn.attachments = attached || [];
  turn.showAttachments(turn.attachments.map((item) => attachments.attachmentElement(item, item.previewUrl)));
  $("#empty-state").remove();
  $transcript.append(turn.$el);
  scrollToBottom();
  answer(turn, config.askUrl, composer.requestBody(turn), () => {
    if (turn.refused) giveBack(turn, true);
    else if (turn.limited) giveBack(turn, false);
  });
}

// A question refused for want of a key (401) or over a limit (429) was not
// kept: its text goes back into the box, to be sent again once there is a
// key, or after the wait the note under it names. Without a key the turn
// itself leaves too: the key dialog says what is wrong.
function giveBack(turn, remove) {
  if (remove) {
    turn.$el.remove();
    if (!$transcript.children(".turn").length && !state.conversationId) showEmptyState(null);
  }
  composer.giveBack(turn.question, turn.attachments);
}

// Continue: the model goes on with the last answer where it was cut off; what
// it writes is appended to the same turn here, and to the same answer on the
// server. Its usage line becomes the whole answer's once the server says it.
function continueAnswer(turn) {
  if (state.current || !state.conversationId) return;
  turn.resume();
  continued = turn;
  answer(turn, conversations.continueUrl(state.conversationId), { stream: true });
}

// Save & send on an edited question: the new version is asked in the
// conversation beside the old one (`edit_of`); on the page it takes the old
// one's place and the turns after it go (the server keeps them, one `<`
// away). The conversation's persona and model go on, as with Regenerate.
function editQuestion(old, text) {
  if (state.current || !state.conversationId || old.questionId === null) return;
  const turn = new Turn(text, old.$el.find(".answer-model").text(), old.persona, regenerate);
  old.$el.nextAll(".turn").addBack().remove();
  $transcript.append(turn.$el);
  scrollToBottom();
  const payload = { input: text, stream: true, conversation_id: state.conversationId, edit_of: old.questionId };
  answer(turn, config.askUrl, payload, () => {
    // Refused before it was stored (no key, a limit): the page shows what the server keeps.
    if (turn.refused || turn.limited) reloadConversation(text);
  });
}

async function reloadConversation(text) {
  const id = state.conversationId;
  const view = state.view;
  try {
    const conversation = await conversations.get(id);
    if (view === state.view && id === state.conversationId) showConversation(conversation);
  } catch (error) {
    return; // keep what is shown
  }
  composer.giveBack(text);
}

// Retry (a failed question) and Regenerate (the last answer) both ask the
// server to answer the conversation's last question again; the new answer
// takes the old one's place on the page, and the old one stays a version
// away (`< 1 / 2 >`).
function regenerate(old, action, value) {
  if (action === "continue") return continueAnswer(old);
  if (action === "edit") return editQuestion(old, value);
  if (action === "switch") return branches.switchBranch(old, value, showConversation);
  if (state.current || !state.conversationId) return;
  const turn = new Turn(old.question, old.$el.find(".answer-model").text(), old.persona, regenerate);
  turn.markStored();
  // The DOM's own replaceWith: jQuery's would drop the old turn's handlers.
  old.$el[0].replaceWith(turn.$el[0]);
  answer(turn, conversations.regenerateUrl(state.conversationId), { stream: true }, () => {
    // Nothing new arrived: the server keeps the old answer, and so does the
    // page, with the reason under it until the next question.
    if (turn.markdown === "" && old.markdown !== "" && turn.$el[0].isConnected) {
      turn.$el[0].replaceWith(old.$el[0]);
      old.$notes.append(turn.$notes.children().addClass("note-transient"));
    }
  });
}
