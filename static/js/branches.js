/*
 * The versions of a turn on the page (the server's branches of a
 * conversation): which version each turn shows, `< i / n >` switching to
 * another, and the reader's place kept across the redraw that follows.
 * Editing a question is conversation.js's (it asks, as a new question does).
 */
import * as i18n from "./i18n.js";
import * as api from "./api.js";
import { conversations, state, announce } from "./page.js";

const $ = window.jQuery;
const t = i18n.t;
const $transcript = $("#transcript");

// Each stored turn on the page gets its ids and versions from the server's
// current branch (the page shows that branch: its turns are those questions,
// in order), so a turn just answered, regenerated or edited offers Edit and
// `< 2 / 2 >`.
export function showBranches(conversation) {
  const messages = (conversation.messages || []).filter((message) => message.role !== "system");
  const turns = $transcript.children(".turn[data-stored]").toArray();
  let next = 0;
  messages.forEach((message, index) => {
    if (message.role !== "user") return;
    const following = messages[index + 1];
    const turn = turns[next] && $(turns[next]).data("turn");
    next += 1;
    if (turn) turn.showBranches(message, following && following.role === "assistant" ? following : null);
  });
}

// `< i / n >` on `turn`: the server makes the branch through that version the
// current one, and `redraw(conversation, place)` (conversation.js's
// showConversation) shows it, the reader staying where they were.
export async function switchBranch(turn, messageId, redraw) {
  if (state.current || !state.conversationId) return;
  const id = state.conversationId;
  const view = state.view;
  const place = placeOf(turn);
  let conversation;
  try {
    conversation = await conversations.choose(id, messageId);
  } catch (error) {
    if (view === state.view) turn.addNote("error", { key: "branch.switchFailed", params: { detail: api.describe(error) } });
    return;
  }
  if (view !== state.view || id !== state.conversationId) return;
  redraw(conversation, place);
  const shown = (conversation.messages || []).find((message) => message.id === messageId);
  if (shown) announce(t("status.branch", { index: shown.sibling_index + 1, count: shown.siblings.length }));
}

// Where the reader is: the turn, and the arrow they pressed (keyboard or mouse).
function placeOf(turn) {
  const pressed = $(document.activeElement);
  return {
    turn: $transcript.children(".turn").index(turn.$el),
    nav: pressed.closest(".question-versions").length ? ".question-versions" : ".answer-versions",
    arrow: pressed.hasClass("branch-next") ? ".branch-next" : ".branch-previous",
  };
}

// Back to `place` after a redraw: the page scrolled as it was (`scrolled`),
// the arrow pressed focused again (at the first or last version, the other one).
export function returnTo(place, scrolled) {
  window.scrollTo(0, scrolled);
  const $nav = $transcript.children(".turn").eq(place.turn).find(place.nav);
  $nav.find(place.arrow).add($nav.find("button")).filter(":enabled").first().trigger("focus");
}
