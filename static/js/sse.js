/*
 * An answer as it streams in: the POST that asks for it (a question, or a
 * regenerated answer), its text/event-stream read piece by piece into a Turn
 * ("reasoning", "delta", "done", "error" events), and what to tell the reader when the
 * request fails.
 *
 * The stream uses plain fetch, because $.ajax only hands over a response once
 * it is complete, and EventSource cannot send a POST with a JSON body.
 */
import { t } from "./i18n.js";
import * as api from "./api.js";
import { config } from "./page.js";

// A small parser for the text/event-stream format (WHATWG HTML, "Server-sent
// events"): events end at a blank line; "event:" names one, "data:" lines
// carry it; lines starting with ":" are keep-alive comments.
export function SseParser(onEvent) {
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

function handleEvent(turn, name, data, hooks) {
  let payload;
  try {
    payload = JSON.parse(data);
  } catch (e) {
    return; // not ours: ignore rather than break the answer
  }
  if (!payload || typeof payload !== "object") return;
  if (name === "delta") {
    turn.append(payload.content || "");
  } else if (name === "reasoning") {
    turn.appendReasoning(payload.content || "");
  } else if (name === "done") {
    if (payload.conversation_id) hooks.onConversation(payload.conversation_id);
    turn.done(payload);
  } else if (name === "error") {
    const message = (payload.error && payload.error.message) || t("error.unknown");
    turn.fail({ key: "error.interrupted", params: { detail: message } });
  }
}

function isAbort(error) {
  return error && error.name === "AbortError";
}

// Streams an answer into `turn`: a question (POST `url` with `payload`) or
// a regenerated answer; both answer with the same events. `hooks`:
//   onConversation(id)  the server named the conversation the answer belongs to
//   onGone()            that conversation is gone (404): deleted meanwhile
export async function streamAnswer(turn, url, payload, hooks) {
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
  if (id) hooks.onConversation(id);

  try {
    if (!response.ok) {
      turn.refused = response.status === 401; // access.js asks for a key
      turn.limited = response.status === 429 && !id; // refused before it was kept
      turn.fail(await httpErrorMessage(response, turn));
      if (response.status === 404) hooks.onGone();
      return;
    }
    const type = response.headers.get("Content-Type") || "";
    if (type.indexOf("text/event-stream") !== 0) {
      await readWholeAnswer(turn, response, type);
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const parser = new SseParser((name, data) => handleEvent(turn, name, data, hooks));
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
    turn.appendReasoning(data.reasoning || "");
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
