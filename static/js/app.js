/*
 * chatproxy Q&A page.
 *
 * Each question goes to the server's question endpoint as a streaming POST and
 * its answer is shown while it arrives. The OpenAI key stays on the server;
 * this page only ever talks to chatproxy.
 *
 * The server keeps conversations: the first question of a new one gets an id
 * (the X-Conversation-Id response header), which the page then sends back with
 * each question, keeps in the URL (#c=<id>) and in localStorage, and uses to
 * load the conversation again after a reload. The list of conversations is
 * sidebar.js's; the texts are i18n.js's.
 *
 * jQuery handles the DOM and events. The stream itself uses plain fetch,
 * because $.ajax only hands over a response once it is complete, and
 * EventSource cannot send a POST with a JSON body.
 *
 * Other pages can keep using the classic interface, which answers plain text:
 *   $.ajax({url: askUrl, type: "GET", data: "input=" + q, dataType: "text"})
 */
(function ($) {
  "use strict";

  document.documentElement.classList.remove("no-js");

  const i18n = window.chatproxyI18n;
  const t = i18n.t;
  const api = window.chatproxyApi;

  // Everything the server tells the page comes through data- attributes, so the
  // page needs no inline script (a strict Content-Security-Policy holds).
  const body = document.body;
  const config = {
    askUrl: body.getAttribute("data-ask-url"),
    usageUrl: body.getAttribute("data-usage-url"),
    modelsUrl: body.getAttribute("data-models-url"),
    auth: body.getAttribute("data-auth") || "keys", // "keys": questions need an access key
    maxInputChars: parseInt(body.getAttribute("data-max-input-chars"), 10) || 0,
  };
  const conversations = new api.Conversations(body.getAttribute("data-conversations-url"));
  const STORAGE_KEY = "chatproxy.conversation"; // the conversation open last

  const state = {
    conversationId: null, // the open conversation; null until the server made one
    // Bumped whenever another conversation is shown: answers and loads that
    // arrive for an older one are dropped.
    view: 0,
    current: null, // the Turn being answered, if any
    loadFailed: null, // the conversation whose load failed, to load again with a new key
    // The model the reader picked; a persona's own model only stands in for it
    // while that persona is chosen.
    chosenModel: $("#model").val() || "",
  };

  const $transcript = $("#transcript");
  const $form = $("#ask-form");
  const $question = $("#question");
  const $model = $("#model");
  const $persona = $("#persona");
  const $send = $("#send");
  const $stop = $("#stop");
  const $charCount = $("#char-count");
  const $liveStatus = $("#live-status");
  const $sessionTotal = $("#session-total");
  const $conversationBar = $("#conversation-bar");
  const $conversationTitle = $("#conversation-title");
  const turnTemplate = document.getElementById("turn-template");
  const emptyState = document.getElementById("empty-state").cloneNode(true);

  // Shows an i18n text in an element; an empty key empties it.
  function show($element, key, params) {
    if (key) i18n.set($element, key, params);
    else $element.removeAttr("data-i18n data-i18n-params").text("");
  }

  /* ---------- Markdown rendering ---------- */

  // A formatting tag with no attributes, e.g. <br> in a table cell or <kbd>.
  const SIMPLE_TAG = /^<\/?(br|kbd|sup|sub|b|i|em|strong|u|s|del|ins|mark|small)\s*\/?>$/i;

  // Model output is untrusted: marked turns it into HTML, DOMPurify removes
  // anything that could run script, then highlight.js colours the code.
  const markdown = new marked.Marked({
    gfm: true,
    renderer: {
      // Images become links: an image loads by itself, and a URL the model was
      // tricked into writing could carry the conversation to a third party.
      image(token) {
        const label = token.text || token.href;
        return '<a href="' + escapeHtml(token.href) + '">[image: ' + escapeHtml(label) + "]</a>";
      },
      // Raw HTML in an answer is shown as the text the model wrote, as ChatGPT
      // does: "use <div> here" stays readable, and a tag with an onerror= never
      // reaches an HTML parser (even DOMPurify's inert one makes the browser
      // report a CSP violation for it). Bare formatting tags still work.
      html(token) {
        if (!token.block && SIMPLE_TAG.test(token.text)) return token.text;
        const text = escapeHtml(token.text);
        return token.block ? "<p>" + text + "</p>" : text;
      },
    },
  });

  const PURIFY_OPTIONS = {
    // Style would break the page's layout (and the CSP refuses it anyway);
    // form controls in an answer could pass for the page's own.
    FORBID_TAGS: ["style", "img", "form", "button", "select", "textarea"],
    FORBID_ATTR: ["style"],
  };

  // Links in an answer open in a new tab so the transcript is not lost.
  DOMPurify.addHook("afterSanitizeAttributes", function (node) {
    if (node.tagName === "A" && node.hasAttribute("href")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    }
  });

  function escapeHtml(text) {
    return String(text)
      .replace(/&/g, "&amp;")
      .replace(/</g, "&lt;")
      .replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;");
  }

  function renderMarkdown(source) {
    return DOMPurify.sanitize(markdown.parse(source), PURIFY_OPTIONS);
  }

  // Guessing a language means trying every one, so untagged blocks are only
  // guessed once, on the finished answer; tagged blocks are coloured as they grow.
  function highlightCode(element, final) {
    $(element).find("pre code").each(function () {
      const match = /\blanguage-(\S+)/.exec(this.className);
      const language = match && match[1];
      if (language ? hljs.getLanguage(language) : final) {
        hljs.highlightElement(this);
      } else {
        $(this).addClass("hljs");
      }
    });
  }

  /* ---------- One question and its answer ---------- */

  // `persona` is {id, name} or null.
  function Turn(question, model, persona) {
    this.question = question;
    this.model = model;
    this.persona = persona;
    this.markdown = ""; // raw answer as received: what Copy copies
    this.finished = false;
    this.frame = 0;
    this.view = state.view;
    this.controller = new AbortController();

    this.$el = $(turnTemplate.content.firstElementChild.cloneNode(true));
    this.$answer = this.$el.find(".answer");
    this.$body = this.$el.find(".answer-body");
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
    this.$retry.on("click", () => regenerate(this));
    this.$regenerate.on("click", () => regenerate(this));
  }

  // The server keeps this question (it answered with the conversation's id):
  // Retry and Regenerate may act on it.
  Turn.prototype.markStored = function () {
    this.$el.attr("data-stored", "true");
  };

  Turn.prototype.append = function (text) {
    if (!text || this.finished) return;
    if (this.markdown === "") this.setState("streaming", "answer.answering");
    this.markdown += text;
    this.scheduleRender();
  };

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
    this.$body[0].innerHTML = renderMarkdown(this.markdown);
    highlightCode(this.$body[0], final);
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
    this.draw(true);
    this.setState(name, status);
    this.$answer.attr("aria-busy", "false");
    this.$copy.prop("disabled", this.markdown === "");
    return true;
  };

  Turn.prototype.done = function (info) {
    keepFollowing(() => this.showDone(info || {}));
  };

  Turn.prototype.showDone = function (info) {
    if (!this.finish("done", "")) return;
    if (info.model) this.$el.find(".answer-model").text(info.model);
    this.showFinishReason(info.finish_reason);
    if (this.markdown === "") this.addNote("info", "note.empty");
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
      if (answer.model) this.$el.find(".answer-model").text(answer.model);
      if (answer.status === "interrupted") {
        this.finish("stopped", "answer.interrupted");
        this.addNote("info", this.markdown ? "note.interruptedPartial" : "note.interruptedEmpty");
      } else if (answer.status === "error") {
        this.finish("error", "answer.error");
        this.addNote("error", storedError(answer));
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
      () => flash($button, "answer.copied"),
      () => flash($button, "answer.copyFailed"),
    );
  };

  /* ---------- Tokens and cost ---------- */

  const formatCount = api.formatCount;
  const formatCost = api.formatCost;

  // The open conversation's tokens and cost, as the server counts them.
  function showTotals(conversation) {
    const answers = (conversation && conversation.messages || []).filter(
      (message) => message.role === "assistant" && message.usage,
    );
    if (!answers.length) {
      show($sessionTotal, "");
      $sessionTotal.prop("hidden", true);
      return;
    }
    const unpriced = answers.filter((message) => typeof message.cost !== "number").length;
    const usage = conversation.usage || sumUsage(answers);
    const cost = typeof conversation.cost === "number"
      ? conversation.cost
      : answers.reduce((sum, message) => sum + (message.cost || 0), 0);
    const params = {
      answers: { key: "totals.answers", params: { count: answers.length } },
      in: formatCount(usage.prompt_tokens),
      out: formatCount(usage.completion_tokens),
      cost: formatCost(cost),
      unpriced: unpriced,
    };
    const key = unpriced === answers.length ? "totals.line" : unpriced ? "totals.linePartlyPriced" : "totals.lineCost";
    show($sessionTotal, key, params);
    $sessionTotal.prop("hidden", false);
  }

  function sumUsage(messages) {
    return messages.reduce(
      (sum, message) => ({
        prompt_tokens: sum.prompt_tokens + (message.usage.prompt_tokens || 0),
        completion_tokens: sum.completion_tokens + (message.usage.completion_tokens || 0),
      }),
      { prompt_tokens: 0, completion_tokens: 0 },
    );
  }

  function flash($button, key) {
    $button.text(t(key));
    clearTimeout($button.data("timer"));
    $button.data("timer", setTimeout(() => $button.text(t("answer.copy")), 1500));
  }

  // navigator.clipboard exists only on https and localhost; plain-http
  // deployments fall back to selecting text in a hidden textarea.
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(() => legacyCopy(text));
    }
    return legacyCopy(text);
  }

  function legacyCopy(text) {
    return new Promise((resolve, reject) => {
      const focused = document.activeElement;
      const $helper = $("<textarea>", { class: "clipboard-helper", readonly: true, "aria-hidden": "true" })
        .val(text)
        .appendTo(document.body);
      $helper[0].select();
      let ok = false;
      try {
        ok = document.execCommand("copy");
      } catch (e) {
        ok = false;
      }
      $helper.remove();
      if (focused) focused.focus();
      if (ok) resolve();
      else reject(new Error("copy failed"));
    });
  }

  /* ---------- Server-sent events ---------- */

  // A small parser for the text/event-stream format (WHATWG HTML, "Server-sent
  // events"): events end at a blank line; "event:" names one, "data:" lines
  // carry it; lines starting with ":" are keep-alive comments.
  function SseParser(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.eventName = "";
    this.data = [];
  }

  SseParser.prototype.push = function (chunk) {
    const text = this.buffer + chunk;
    // A trailing "\r" may be the first half of "\r\n": keep it for the next chunk.
    const cut = text.endsWith("\r") ? text.length - 1 : text.length;
    const lines = text.slice(0, cut).split(/\r\n|\r|\n/);
    this.buffer = lines.pop() + text.slice(cut);
    lines.forEach(this.line, this);
  };

  // At the end of the stream a held-back "\r" ends its line after all. An event
  // not closed by a blank line is dropped, as EventSource does.
  SseParser.prototype.end = function () {
    if (this.buffer.endsWith("\r")) this.push("\n");
    this.buffer = "";
  };

  SseParser.prototype.line = function (line) {
    if (line === "") {
      if (this.data.length) this.onEvent(this.eventName || "message", this.data.join("\n"));
      this.eventName = "";
      this.data = [];
      return;
    }
    if (line.charAt(0) === ":") return;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.charAt(0) === " ") value = value.slice(1);
    if (field === "event") this.eventName = value;
    else if (field === "data") this.data.push(value);
    // "id" and "retry" are for reconnecting, which a question never does.
  };

  function handleEvent(turn, name, data) {
    let payload;
    try {
      payload = JSON.parse(data);
    } catch (e) {
      return; // not ours: ignore rather than break the answer
    }
    if (!payload || typeof payload !== "object") return;
    if (name === "delta") {
      turn.append(payload.content || "");
    } else if (name === "done") {
      if (payload.conversation_id) adoptConversation(turn, payload.conversation_id);
      turn.done(payload);
    } else if (name === "error") {
      const message = (payload.error && payload.error.message) || t("error.unknown");
      turn.fail({ key: "error.interrupted", params: { detail: message } });
    }
  }

  /* ---------- Talking to chatproxy ---------- */

  function requestBody(turn) {
    const request = { input: turn.question, stream: true };
    if (turn.model) request.model = turn.model;
    // "" is "No persona": a conversation otherwise goes on with the persona it had.
    if (turn.persona || $persona.length) request.persona = turn.persona ? turn.persona.id : "";
    if (state.conversationId) request.conversation_id = state.conversationId;
    return request;
  }

  function isAbort(error) {
    return error && error.name === "AbortError";
  }

  // Streams an answer into `turn`: a question (POST `url` with `payload`) or
  // a regenerated answer; both answer with the same events.
  async function streamAnswer(turn, url, payload) {
    let response;
    try {
      response = await api.authorizedFetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify(payload),
        signal: turn.controller.signal,
      });
    } catch (error) {
      if (isAbort(error)) turn.stop();
      else turn.fail({ key: "error.unreachable" });
      return;
    }

    // Sent once the server has kept the question, also with an error after that.
    const id = response.headers.get("X-Conversation-Id");
    if (id) adoptConversation(turn, id);

    try {
      if (!response.ok) {
        turn.refused = response.status === 401; // access.js asks for a key
        turn.limited = response.status === 429 && !id; // refused before it was kept
        turn.fail(await httpErrorMessage(response, turn));
        // Deleted meanwhile (another tab?): the next question starts a new conversation.
        if (response.status === 404 && turn.view === state.view) setConversation(null, "replace");
        return;
      }
      const type = response.headers.get("Content-Type") || "";
      if (type.indexOf("text/event-stream") !== 0) {
        await readWholeAnswer(turn, response, type);
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      const parser = new SseParser((name, data) => handleEvent(turn, name, data));
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.push(decoder.decode(value, { stream: true }));
      }
      parser.push(decoder.decode());
      parser.end();
    } catch (error) {
      if (isAbort(error)) turn.stop();
      else turn.fail({ key: "error.connectionLost" });
      return;
    }
    // A stream that closes without "done" or "error" was cut somewhere on the way.
    turn.fail({ key: "error.streamClosed" });
  }

  // A proxy in between may ignore the stream request and answer in one piece:
  // show that answer rather than nothing.
  async function readWholeAnswer(turn, response, type) {
    const text = await response.text();
    if (type.indexOf("application/json") === 0) {
      const data = JSON.parse(text);
      turn.append(data.answer || "");
      turn.done(data);
    } else {
      turn.append(text);
      turn.done({});
    }
  }

  // Error bodies have OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
  // Returns what to tell the reader, as an i18n text {key, params}.
  async function httpErrorMessage(response, turn) {
    let error = {};
    try {
      const data = await response.json();
      error = (data && data.error) || {};
    } catch (e) {
      if (isAbort(e)) throw e;
      // not JSON, e.g. an HTML error page from a proxy in between
    }
    const detail = error.message || "";
    const raw = (text) => ({ key: "raw", params: { text: text } });
    switch (response.status) {
      case 400:
        return detail ? raw(detail) : { key: "error.notAccepted" };
      case 401:
        return { key: "error.needKey", params: { detail: detail } };
      case 403:
        return detail ? raw(detail) : { key: "error.modelNotAllowed", params: { model: turn.model || "default" } };
      case 404:
        return { key: "error.conversationGone" };
      case 413:
        return config.maxInputChars
          ? { key: "error.tooLongMax", params: { max: config.maxInputChars } }
          : { key: "error.tooLong" };
      case 429: {
        // chatproxy's own limits say which, in the reader's language; the
        // upstream's 429 is "rate limited" in general.
        const seconds = api.retryAfterSeconds(response.headers.get("Retry-After"));
        const limit = api.limitMessage(error.code, detail, seconds);
        if (limit) return limit;
        return seconds ? { key: "error.rateLimitedIn", params: { seconds: seconds } } : { key: "error.rateLimited" };
      }
      case 502:
        return { key: "error.upstream", params: { detail: detail } };
      case 503:
        return { key: "error.notConfigured", params: { detail: detail } };
      case 504:
        return { key: "error.timeout" };
      default:
        return { key: "error.http", params: { status: response.status, detail: detail } };
    }
  }

  /* ---------- Conversations ---------- */

  function conversationFromHash() {
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

  function remembered() {
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
  function abandonCurrent() {
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
  function startNewConversation(mode, noteKey) {
    abandonCurrent();
    state.view += 1;
    setConversation(null, mode);
    showEmptyState(noteKey);
    showTotals(null);
    announce(t("status.new"));
    $question.trigger("focus");
  }

  async function openConversation(id, mode) {
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

  // Draws a whole conversation as the server keeps it (after a load or an import).
  function showConversation(conversation) {
    state.view += 1;
    setConversation(conversation.id, conversation.id === conversationFromHash() ? null : "push");
    clearTranscript();
    const messages = (conversation.messages || []).filter((message) => message.role !== "system");
    messages.forEach((message, index) => {
      if (message.role !== "user") return; // an answer is drawn with its question
      const next = messages[index + 1];
      const answer = next && next.role === "assistant" ? next : null;
      const turn = new Turn(message.content, (answer && answer.model) || message.model || "", null);
      turn.restore(message, answer);
      $transcript.append(turn.$el);
    });
    if (!$transcript.children().length) showEmptyState(null);
    applyPickers(conversation);
    showConversationDetails(conversation);
    scrollToBottom();
    $question.trigger("focus");
  }

  // What the server says about the open conversation now: title, totals,
  // which answer can be regenerated.
  function showConversationDetails(conversation) {
    showConversationBar(conversation);
    showTotals(conversation);
    showTurnActions(conversation);
  }

  function showConversationBar(conversation) {
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
    const link = $("<a>", { href: url, download: file.name, class: "visually-hidden" }).appendTo(body);
    link[0].click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  function showExportStatus(text) {
    const $status = $("#export-status");
    if (text) i18n.set($status, text.key, text.params);
    else $status.removeAttr("data-i18n data-i18n-params").text("");
  }

  $(".export-link").on("click", function (event) {
    // Ctrl/Cmd/Shift-click and middle-click do what the browser does with a link.
    if (event.ctrlKey || event.metaKey || event.shiftKey || event.altKey || event.button) return;
    event.preventDefault();
    exportConversation(this.id === "export-json" ? "json" : "md");
  });

  // The conversation's persona and model become the pickers' choice, so a
  // question asked in it goes on the same way.
  function applyPickers(conversation) {
    const offered = ($select, value) => value && $select.find("option").filter((i, o) => o.value === value).length;
    if ($persona.length) $persona.val(offered($persona, conversation.persona) ? conversation.persona : "");
    if (offered($model, conversation.model)) state.chosenModel = conversation.model;
    applyPersonaModel();
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

  /* ---------- Page behaviour ---------- */

  function isNearBottom() {
    const page = document.documentElement;
    return window.innerHeight + window.scrollY >= page.scrollHeight - 120;
  }

  function scrollToBottom() {
    window.scrollTo(0, document.documentElement.scrollHeight);
  }

  // Follows a growing answer only if the reader is already at the bottom:
  // someone who scrolled up to read is not dragged back down.
  function keepFollowing(change) {
    const follow = isNearBottom();
    change();
    if (follow) scrollToBottom();
  }

  function announce(text) {
    $liveStatus.text(text);
  }

  function setBusy(turn) {
    state.current = turn;
    $send.prop("disabled", !!turn);
    $stop.prop("disabled", !turn);
    $transcript.find(".turn-action").prop("disabled", !!turn);
  }

  function updateCharCount() {
    const length = $question.val().length;
    const max = config.maxInputChars;
    $charCount.text(max ? length + " / " + max : String(length));
    $charCount.toggleClass("near-limit", !!max && length >= max * 0.9 && length < max);
    $charCount.toggleClass("at-limit", !!max && length >= max);
  }

  function chosenPersona() {
    const option = $persona.find("option:selected");
    return option.length && option.val() ? { id: option.val(), name: option.text() } : null;
  }

  // A persona with its own model (data-model) selects that model; another
  // persona, or none, gives back the model the reader picked.
  function applyPersonaModel() {
    if (!$model.length) return;
    const model = $persona.find("option:selected").attr("data-model");
    const offered = model && $model.find("option").filter((i, o) => o.value === model).length;
    $model.val(offered ? model : state.chosenModel);
  }

  // Streams `turn`'s answer from `url`, then (`after()`, if given) asks the
  // server what changed.
  function answer(turn, url, payload, after) {
    setBusy(turn);
    $transcript.find(".turn-action").prop("hidden", true);
    $transcript.find(".note-transient").remove();
    announce(t("status.sent"));
    streamAnswer(turn, url, payload).finally(() => {
      if (state.current === turn) setBusy(null);
      keyAccess.refreshUsage();
      if (turn.view !== state.view) return;
      if (after) after();
      refreshConversation();
    });
  }

  function ask(question, model, persona) {
    const turn = new Turn(question, model, persona);
    $("#empty-state").remove();
    $transcript.append(turn.$el);
    scrollToBottom();
    answer(turn, config.askUrl, requestBody(turn), () => {
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
    if (!$question.val()) {
      $question.val(turn.question);
      updateCharCount();
    }
  }

  // Retry (a failed question) and Regenerate (the last answer) both ask the
  // server to answer the conversation's last question again; the new answer
  // takes the old one's place.
  function regenerate(old) {
    if (state.current || !state.conversationId) return;
    const turn = new Turn(old.question, old.$el.find(".answer-model").text(), old.persona);
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

  $form.on("submit", function (event) {
    event.preventDefault();
    if (state.current) return; // one answer at a time
    const question = $question.val();
    if (!question.trim()) {
      $question.trigger("focus");
      return;
    }
    if (config.maxInputChars && question.length > config.maxInputChars) {
      updateCharCount();
      return;
    }
    ask(question, $model.length ? $model.val() : "", chosenPersona());
    $question.val("");
    updateCharCount();
    $question.trigger("focus");
  });

  $question.on("keydown", function (event) {
    if (event.key !== "Enter" || event.shiftKey) return;
    // Input methods (pinyin and others) confirm a word with Enter: not a send.
    if (event.originalEvent.isComposing || event.keyCode === 229) return;
    event.preventDefault();
    $form.trigger("submit");
  });

  // Escape closes the conversation drawer, else stops the answer without
  // reaching for the mouse.
  $(document).on("keydown", function (event) {
    if (event.key !== "Escape") return;
    if (keyAccess.isOpen()) return; // the dialog closes itself
    if (sidebar.closeDrawer(true)) return;
    if (state.current) state.current.controller.abort();
  });

  $question.on("input", updateCharCount);

  $model.on("change", function () {
    state.chosenModel = $model.val();
  });

  $persona.on("change", applyPersonaModel);

  $stop.on("click", function () {
    if (state.current) state.current.controller.abort();
  });

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

  /* ---------- Models and the access key ---------- */

  // The model picker offers what the server lists for this key (GET
  // /api/models): the page was rendered with all of CHATPROXY_MODELS.
  async function loadModels() {
    if (!$model.length || !config.modelsUrl) return;
    let models;
    try {
      models = await api.models(config.modelsUrl);
    } catch (error) {
      return; // keep the picker as rendered; the server still checks each question
    }
    if (!models.length) return;
    const ids = models.map((model) => model.id);
    const current = ids.indexOf($model.val()) !== -1 ? $model.val() : null;
    const fallback = (models.find((model) => model.default) || models[0]).id;
    $model.empty();
    ids.forEach((id) => $model.append($("<option>", { value: id, text: id })));
    if (ids.indexOf(state.chosenModel) === -1) state.chosenModel = current || fallback;
    applyPersonaModel();
  }

  // The key was saved (`key`), changed, or forgotten (`key` null). Another
  // key has other conversations, limits and models: what was shown goes, and
  // what failed for want of a key is loaded again.
  function keyChanged(previous, key) {
    if (previous && previous !== key) {
      sidebar.clear();
      startNewConversation("replace");
    } else if (state.conversationId && state.loadFailed === state.conversationId && !state.current) {
      openConversation(state.conversationId, null);
    }
    if (!key) return;
    sidebar.refresh();
    loadModels();
    $question.trigger("focus");
  }

  /* ---------- Start ---------- */

  const keyAccess = new window.ChatproxyAccess({
    auth: config.auth,
    usageUrl: config.usageUrl,
    announce: announce,
    onChange: keyChanged,
  });

  const sidebar = new window.ChatproxySidebar({
    conversations: conversations,
    onSelect: (id) => {
      if (id !== state.conversationId) openConversation(id, "push");
    },
    onNew: () => {
      if (state.conversationId || state.current) startNewConversation("push");
      else $question.trigger("focus");
    },
    onRenamed: (summary) => {
      if (summary.id === state.conversationId) showConversationBar(summary);
    },
    onDeleted: (id) => {
      if (id === state.conversationId) startNewConversation("replace");
    },
    onImported: (conversation) => {
      abandonCurrent();
      showConversation(conversation);
    },
  });

  // Back and Forward (and a hand-edited #c=) move between conversations.
  function followLocation() {
    const id = conversationFromHash();
    if (id === state.conversationId) return;
    if (id) openConversation(id, null);
    else startNewConversation(null);
  }

  window.addEventListener("popstate", followLocation);
  window.addEventListener("hashchange", followLocation);

  i18n.setLanguage(i18n.language(), false); // translates the page, sets <html lang>
  updateCharCount();
  applyPersonaModel(); // a browser may restore the persona picked before a reload
  sidebar.refresh();
  loadModels();
  keyAccess.refreshUsage();
  const initial = conversationFromHash() || remembered();
  if (initial) openConversation(initial, "replace");
  $question.trigger("focus");
})(jQuery);
