/*
 * chatproxy Q&A page.
 *
 * Each question goes to the server's question endpoint as a streaming POST and
 * its answer is shown while it arrives. The OpenAI key stays on the server;
 * this page only ever talks to chatproxy.
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

  // Everything the server tells the page comes through data- attributes, so the
  // page needs no inline script (a strict Content-Security-Policy holds).
  const body = document.body;
  const config = {
    askUrl: body.getAttribute("data-ask-url"),
    maxInputChars: parseInt(body.getAttribute("data-max-input-chars"), 10) || 0,
  };

  const state = {
    // Questions are independent for now. When the server keeps conversations,
    // it will hand out an id that requestBody() sends back with each question.
    conversationId: null,
    current: null, // the Turn being answered, if any
    // Tokens and cost of the answers since the page was opened (per conversation
    // once the server keeps conversations).
    totals: { answers: 0, tokensIn: 0, tokensOut: 0, cost: 0, unpriced: 0 },
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
  const turnTemplate = document.getElementById("turn-template");

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
    this.controller = new AbortController();

    this.$el = $(turnTemplate.content.firstElementChild.cloneNode(true));
    this.$answer = this.$el.find(".answer");
    this.$body = this.$el.find(".answer-body");
    this.$status = this.$el.find(".answer-status");
    this.$notes = this.$el.find(".answer-notes");
    this.$usage = this.$el.find(".answer-usage");
    this.$copy = this.$el.find(".copy-button");

    this.$el.find(".question-text").text(question);
    this.$el.find(".answer-model").text(model || "");
    this.$el.find(".answer-persona").text(persona ? persona.name : "");
    this.$copy.on("click", this.copy.bind(this));
  }

  Turn.prototype.append = function (text) {
    if (!text || this.finished) return;
    if (this.markdown === "") this.setState("streaming", "Answering…");
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

  Turn.prototype.setState = function (name, status) {
    this.$answer.attr("data-state", name);
    this.$status.text(status);
  };

  Turn.prototype.addNote = function (kind, text) {
    $("<p>", { class: "note note-" + kind, text: text }).appendTo(this.$notes);
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
    if (info.finish_reason === "length") {
      this.addNote("warning", "Answer cut off (max_tokens).");
    } else if (info.finish_reason && info.finish_reason !== "stop") {
      this.addNote("warning", "Answer ended early: " + info.finish_reason + ".");
    }
    if (this.markdown === "") this.addNote("info", "The answer was empty.");
    if (info.usage) {
      const u = info.usage;
      const cost = typeof info.cost === "number" ? info.cost : null;
      let text = "Tokens: " + formatCount(u.prompt_tokens) + " in · " + formatCount(u.completion_tokens) + " out";
      if (cost !== null) text += " · " + formatCost(cost);
      this.$usage.text(text);
      this.$usage.attr("title", cost === null ? "No price is known for this model." : "Cost in US dollars, from the usage the upstream reported.");
      addToTotals(u, cost);
    }
    announce("Answer finished.");
  };

  Turn.prototype.stop = function () {
    keepFollowing(() => {
      if (!this.finish("stopped", "Stopped")) return;
      this.addNote("info", this.markdown ? "Stopped: the answer above is partial." : "Stopped before any answer arrived.");
      announce("Stopped.");
    });
  };

  // Keeps whatever part of the answer already arrived and says what went wrong under it.
  Turn.prototype.fail = function (message) {
    keepFollowing(() => {
      if (!this.finish("error", "Error")) return;
      this.addNote("error", message);
      announce(message);
    });
  };

  Turn.prototype.copy = function () {
    const $button = this.$copy;
    copyText(this.markdown).then(
      () => flash($button, "Copied"),
      () => flash($button, "Copy failed"),
    );
  };

  /* ---------- Tokens and cost ---------- */

  function formatCount(n) {
    return typeof n === "number" ? n.toLocaleString("en-US") : "?";
  }

  // US dollars: cents from $0.10 up, else two significant digits ($0.000058).
  function formatCost(usd) {
    if (usd === 0) return "$0";
    if (usd >= 0.1) return "$" + usd.toFixed(2);
    if (usd < 0.000001) return "<$0.000001";
    return "$" + usd.toPrecision(2).replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "");
  }

  function addToTotals(usage, cost) {
    const totals = state.totals;
    totals.answers += 1;
    totals.tokensIn += usage.prompt_tokens || 0;
    totals.tokensOut += usage.completion_tokens || 0;
    if (cost === null) totals.unpriced += 1;
    else totals.cost += cost;
    let text =
      "This page: " + totals.answers + (totals.answers === 1 ? " answer" : " answers") +
      " · " + formatCount(totals.tokensIn) + " in · " + formatCount(totals.tokensOut) + " out";
    if (totals.unpriced < totals.answers) text += " · " + formatCost(totals.cost);
    if (totals.unpriced) text += " (" + totals.unpriced + " without a price)";
    $sessionTotal.text(text).prop("hidden", false);
  }

  function flash($button, text) {
    $button.text(text);
    clearTimeout($button.data("timer"));
    $button.data("timer", setTimeout(() => $button.text("Copy"), 1500));
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
      turn.done(payload);
    } else if (name === "error") {
      const message = (payload.error && payload.error.message) || "unknown error";
      turn.fail("The answer was interrupted. " + message);
    }
  }

  /* ---------- Talking to chatproxy ---------- */

  function requestBody(turn) {
    const request = { input: turn.question, stream: true };
    if (turn.model) request.model = turn.model;
    if (turn.persona) request.persona = turn.persona.id;
    if (state.conversationId) request.conversation_id = state.conversationId;
    return request;
  }

  function isAbort(error) {
    return error && error.name === "AbortError";
  }

  async function streamAnswer(turn) {
    let response;
    try {
      response = await fetch(config.askUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify(requestBody(turn)),
        signal: turn.controller.signal,
      });
    } catch (error) {
      if (isAbort(error)) turn.stop();
      else turn.fail("chatproxy could not be reached. Check the connection and try again.");
      return;
    }

    try {
      if (!response.ok) {
        turn.fail(await httpErrorMessage(response, turn));
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
      else turn.fail("The connection to chatproxy was lost before the answer was complete.");
      return;
    }
    // A stream that closes without "done" or "error" was cut somewhere on the way.
    turn.fail("The answer ended early: the stream closed before it was complete.");
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
  async function httpErrorMessage(response, turn) {
    let error = {};
    try {
      const data = await response.json();
      error = (data && data.error) || {};
    } catch (e) {
      if (isAbort(e)) throw e;
      // not JSON, e.g. an HTML error page from a proxy in between
    }
    const detail = error.message ? " " + error.message : "";
    switch (response.status) {
      case 400:
        return error.message || "The question was not accepted.";
      case 401:
        return "An access key is needed to ask questions here." + detail;
      case 403:
        return error.message || 'The model "' + (turn.model || "default") + '" is not allowed here.';
      case 413:
        return "The question is too long" +
          (config.maxInputChars ? " (at most " + config.maxInputChars + " characters)." : ".");
      case 429: {
        const seconds = retryAfterSeconds(response.headers.get("Retry-After"));
        return seconds ? "Rate limited, try again in " + seconds + " s." : "Rate limited, try again in a moment.";
      }
      case 502:
        return "The upstream (OpenAI) could not be reached or failed." + detail;
      case 503:
        return "chatproxy is not configured to reach OpenAI yet." + detail;
      case 504:
        return "The upstream (OpenAI) timed out. Try again, or ask for a shorter answer.";
      default:
        return "chatproxy answered with an error (HTTP " + response.status + ")." + detail;
    }
  }

  // Retry-After is either a number of seconds or an HTTP date.
  function retryAfterSeconds(header) {
    if (!header) return 0;
    if (/^\s*\d+\s*$/.test(header)) return Math.max(1, parseInt(header, 10));
    const when = Date.parse(header);
    return isNaN(when) ? 0 : Math.max(1, Math.ceil((when - Date.now()) / 1000));
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

  function ask(question, model, persona) {
    const turn = new Turn(question, model, persona);
    $("#empty-state").remove();
    $transcript.append(turn.$el);
    scrollToBottom();
    setBusy(turn);
    announce("Question sent, waiting for the answer.");
    streamAnswer(turn).finally(() => {
      if (state.current === turn) setBusy(null);
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

  // Escape stops the answer without reaching for the mouse.
  $(document).on("keydown", function (event) {
    if (event.key === "Escape" && state.current) state.current.controller.abort();
  });

  $question.on("input", updateCharCount);

  $model.on("change", function () {
    state.chosenModel = $model.val();
  });

  $persona.on("change", applyPersonaModel);

  $stop.on("click", function () {
    if (state.current) state.current.controller.abort();
  });

  updateCharCount();
  applyPersonaModel(); // a browser may restore the persona picked before a reload
  $question.trigger("focus");
})(jQuery);
