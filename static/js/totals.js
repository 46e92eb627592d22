/*
 * The open conversation's tokens and cost (#session-total), as the server
 * counts them: every answer kept, the versions not shown too.
 */
import * as api from "./api.js";
import { show } from "./page.js";

const $ = window.jQuery;
const formatCount = api.formatCount;
const formatCost = api.formatCost;
const $sessionTotal = $("#session-total");

// The open conversation's tokens and cost, as the server counts them.
export function showTotals(conversation) {
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
  // Every version kept counts (it was paid for), the branches not shown too.
  const count = typeof conversation.answer_count === "number" ? conversation.answer_count : answers.length;
  const params = {
    answers: { key: "totals.answers", params: { count: count } },
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
