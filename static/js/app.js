/*
 * chatproxy Q&A page: the entry module. templates/index.html loads only this
 * file (<script type="module">); it imports the others. The vendored jQuery,
 * marked, DOMPurify, highlight.js and KaTeX are classic scripts that run before it
 * and stay window globals; our modules pass nothing through window.
 *
 *   app.js           starts the page: wires the modules below together
 *   page.js          what they share: the server's settings, the open
 *                    conversation's state, announcing, scrolling
 *   conversation.js  the conversation view: #c=<id> and localStorage,
 *                    loading and showing, title bar and exports, totals,
 *                    asking, Retry and Regenerate
 *   composer.js      the question box: persona and model pickers, character
 *                    count, Send and Stop
 *   turn.js          one question and its answer as shown
 *   markdown.js      answers as safe HTML (marked, DOMPurify, highlight.js)
 *   math.js          formulas found in Markdown and drawn by KaTeX
 *   codeblocks.js    a code block's language and Copy button
 *   clipboard.js     copying text
 *   sse.js           an answer as it streams in (fetch, text/event-stream)
 *   sidebar.js       the conversation list
 *   access.js        the access key dialog and the usage line
 *   api.js           chatproxy's API: requests with the access key, errors
 *   i18n.js          the page in English or Chinese: texts put on the page
 *   texts.js         the texts themselves
 *
 * Each question goes to the server's question endpoint as a streaming POST and
 * its answer is shown while it arrives. The OpenAI key stays on the server;
 * this page only ever talks to chatproxy.
 *
 * jQuery handles the DOM and events; the answer stream is plain fetch (sse.js
 * says why).
 *
 * Other pages can keep using the classic interface, which answers plain text:
 *   $.ajax({url: askUrl, type: "GET", data: "input=" + q, dataType: "text"})
 */
import * as i18n from "./i18n.js";
import * as api from "./api.js";
import { Access } from "./access.js";
import { Sidebar } from "./sidebar.js";
import { config, conversations, state, announce } from "./page.js";
import * as composer from "./composer.js";
import * as view from "./conversation.js";

// Script runs: the page's no-JavaScript fallbacks (app.css) go. The imported
// modules ran just before this line, in the same task: nothing was painted.
document.documentElement.classList.remove("no-js");

const $ = window.jQuery;
const t = i18n.t;

// For the browser's console and the browser tests (which format a cost as the
// page does); none of the page's modules reads it.
window.chatproxyApi = api;

/* ---------- Languages ---------- */

function showLanguage(language) {
  $(".language-option").each(function () {
    this.setAttribute("aria-pressed", String(this.getAttribute("data-language") === language));
  });
}

$(".language-option").on("click", function () {
  const language = this.getAttribute("data-language");
  if (language === i18n.language()) return;
  i18n.setLanguage(language, true);
  announce(t("status.language"));
});

i18n.onChange(showLanguage);

/* ---------- The access key ---------- */

// The key was saved (`key`), changed, or forgotten (`key` null). Another
// key has other conversations, limits and models: what was shown goes, and
// what failed for want of a key is loaded again.
function keyChanged(previous, key) {
  if (previous && previous !== key) {
    sidebar.clear();
    view.startNewConversation("replace");
  } else if (state.conversationId && state.loadFailed === state.conversationId && !state.current) {
    view.openConversation(state.conversationId, null);
  }
  if (!key) return;
  sidebar.refresh();
  composer.loadModels();
  composer.focus();
}

/* ---------- Start ---------- */

const keyAccess = new Access({
  auth: config.auth,
  usageUrl: config.usageUrl,
  announce: announce,
  onChange: keyChanged,
});

const sidebar = new Sidebar({
  conversations: conversations,
  onSelect: (id) => {
    if (id !== state.conversationId) view.openConversation(id, "push");
  },
  onNew: () => {
    if (state.conversationId || state.current) view.startNewConversation("push");
    else composer.focus();
  },
  onRenamed: (summary) => {
    if (summary.id === state.conversationId) view.showConversationBar(summary);
  },
  onDeleted: (id) => {
    if (id === state.conversationId) view.startNewConversation("replace");
  },
  onImported: (conversation) => {
    view.abandonCurrent();
    view.showConversation(conversation);
  },
});

// Escape closes the conversation drawer, else stops the answer without
// reaching for the mouse.
$(document).on("keydown", function (event) {
  if (event.key !== "Escape") return;
  if (keyAccess.isOpen()) return; // the dialog closes itself
  if (sidebar.closeDrawer(true)) return;
  composer.stop();
});

composer.start(view.ask);
view.start({ sidebar: sidebar, keyAccess: keyAccess });

i18n.setLanguage(i18n.language(), false); // translates the page, sets <html lang>
composer.updateCharCount();
composer.applyPersonaModel(); // a browser may restore the persona picked before a reload
sidebar.refresh();
composer.loadModels();
keyAccess.refreshUsage();
const initial = view.conversationFromHash() || view.remembered();
if (initial) view.openConversation(initial, "replace");
composer.focus();
