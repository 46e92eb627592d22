/*
 * What the parts of the Q&A page share: the server's settings, the client of
 * its conversations API, the state of the open conversation, and helpers for
 * the page as a whole (an i18n text in an element, announcements for screen
 * readers, following a growing answer down the page).
 */
import * as i18n from "./i18n.js";
import * as api from "./api.js";

const $ = window.jQuery;

// Everything the server tells the page comes through data- attributes, so the
// page needs no inline script (a strict Content-Security-Policy holds).
const body = document.body;
export const config = {
  askUrl: body.getAttribute("data-ask-url"),
  usageUrl: body.getAttribute("data-usage-url"),
  modelsUrl: body.getAttribute("data-models-url"),
  auth: body.getAttribute("data-auth") || "keys", // "keys": questions need an access key
  maxInputChars: parseInt(body.getAttribute("data-max-input-chars"), 10) || 0,
  attachmentsUrl: body.getAttribute("data-attachments-url"), // + "/" + id: an attachment's bytes
};
export const conversations = new api.Conversations(body.getAttribute("data-conversations-url"));

export const state = {
  conversationId: null, // the open conversation; null until the server made one
  // Bumped whenever another conversation is shown: answers and loads that
  // arrive for an older one are dropped.
  view: 0,
  current: null, // the Turn being answered, if any
  loadFailed: null, // the conversation whose load failed, to load again with a new key
};

const $liveStatus = $("#live-status");

// Shows an i18n text in an element; an empty key empties it.
export function show($element, key, params) {
  if (key) i18n.set($element, key, params);
  else $element.removeAttr("data-i18n data-i18n-params").text("");
}

function isNearBottom() {
  const page = document.documentElement;
  return window.innerHeight + window.scrollY >= page.scrollHeight - 120;
}

export function scrollToBottom() {
  window.scrollTo(0, document.documentElement.scrollHeight);
}

// Follows a growing answer only if the reader is already at the bottom:
// someone who scrolled up to read is not dragged back down.
export function keepFollowing(change) {
  const follow = isNearBottom();
  change();
  if (follow) scrollToBottom();
}

export function announce(text) {
  $liveStatus.text(text);
}
