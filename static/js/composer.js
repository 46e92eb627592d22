/*
 * The question box and what goes with it: the persona and model pickers (a
 * persona with its own model selects that model), the character count, Send
 * and Stop. What a question becomes once sent is conversation.js's business:
 * the composer hands it to the `ask` given to start().
 */
import * as api from "./api.js";
import * as attachments from "./attachments.js";
import { config, state } from "./page.js";

const $ = window.jQuery;
const $form = $("#ask-form");
const $question = $("#question");
const $model = $("#model");
const $persona = $("#persona");
const $send = $("#send");
const $stop = $("#stop");
const $charCount = $("#char-count");

// The model the reader picked; a persona's own model only stands in for it
// while that persona is chosen.
let chosenModel = $model.val() || "";

// Makes the composer work: `ask(question, model, persona, attached)` sends a
// question (`persona` is {id, name} or null; `attached` what attachments.js
// held for it).
export function start(ask) {
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
    ask(question, $model.length ? $model.val() : "", chosenPersona(), attachments.take());
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

  $question.on("input", updateCharCount);

  $model.on("change", function () {
    chosenModel = $model.val();
  });

  $persona.on("change", applyPersonaModel);

  $stop.on("click", stop);
  attachments.start();
}

export function focus() {
  $question.trigger("focus");
}

// Stops the answer coming now, if any.
export function stop() {
  if (state.current) state.current.controller.abort();
}

// While an answer comes, Send waits and Stop can stop it.
export function showBusy(busy) {
  $send.prop("disabled", busy);
  $stop.prop("disabled", !busy);
}

// A question that was not kept goes back into the box, unless something new
// was typed there meanwhile; its attachments go back under it.
export function giveBack(question, attached) {
  attachments.giveBack(attached);
  if (!$question.val()) {
    $question.val(question);
    updateCharCount();
  }
}

// What a question sends: its text, model, persona and attachments, in the open conversation.
export function requestBody(turn) {
  const request = Object.assign({ input: turn.question, stream: true }, attachments.bodyFields(turn.attachments || []));
  if (turn.model) request.model = turn.model;
  // "" is "No persona": a conversation otherwise goes on with the persona it had.
  if (turn.persona || $persona.length) request.persona = turn.persona ? turn.persona.id : "";
  if (state.conversationId) request.conversation_id = state.conversationId;
  return request;
}

export function updateCharCount() {
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
export function applyPersonaModel() {
  if (!$model.length) return;
  const model = $persona.find("option:selected").attr("data-model");
  const offered = model && $model.find("option").filter((i, o) => o.value === model).length;
  $model.val(offered ? model : chosenModel);
}

// The conversation's persona and model become the pickers' choice, so a
// question asked in it goes on the same way.
export function applyPickers(conversation) {
  const offered = ($select, value) => value && $select.find("option").filter((i, o) => o.value === value).length;
  if ($persona.length) $persona.val(offered($persona, conversation.persona) ? conversation.persona : "");
  if (offered($model, conversation.model)) chosenModel = conversation.model;
  applyPersonaModel();
}

// The model picker offers what the server lists for this key (GET
// /api/models): the page was rendered with all of CHATPROXY_MODELS.
export async function loadModels() {
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
  if (ids.indexOf(chosenModel) === -1) chosenModel = current || fallback;
  applyPersonaModel();
}
