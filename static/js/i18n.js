/*
 * chatproxy page texts in English and simplified Chinese, and the few
 * functions that put them on the page.
 *
 * The template is written in English (so it reads right without JavaScript)
 * and marks what to translate:
 *   data-i18n="key"             the element's text
 *   data-i18n-placeholder="key" its placeholder attribute
 *   data-i18n-title="key"       its title attribute
 *   data-i18n-aria-label="key"  its aria-label attribute
 *   data-i18n-params='{"n": 2}' values for the {n} placeholders of those keys
 * The other modules write their texts with t(key, params) or
 * set(element, key, params); set() marks the element the same way, so a
 * language switch re-translates everything already on the page, without a
 * reload.
 *
 * A text is a string with {name} placeholders, or {one, other} when it
 * depends on params.count.
 */

const STORAGE_KEY = "chatproxy.lang";
const LANGUAGES = ["en", "zh-CN"];

const TEXTS = {
  en: {
    // A text from elsewhere (the server's own error message), shown as it is.
    raw: "{text}",
    "header.conversations": "Conversations",
    "header.language": "Language",
    "banner.open.label": "Open access:",
    "banner.open.text": "anyone who can reach this page can ask questions on the owner's account.",
    "banner.demo.label": "Demo mode:",
    "banner.demo.text": "answers come from the built-in simulator, not OpenAI.",

    "key.button": "Key",
    "key.button.title": "The access key this page sends: change or forget it",
    "key.button.titleNamed": "Access key “{name}”: change or forget it",
    "key.title.needed": "This chatproxy needs an access key",
    "key.title.change": "Access key",
    "key.lead": "Access keys come from the owner of this chatproxy: ask them for one (they make keys with flask keys create).",
    "key.label": "Access key",
    "key.note": "The key is kept in this browser only, and sent to this chatproxy with each request.",
    "key.save": "Save",
    "key.cancel": "Cancel",
    "key.forget": "Forget key",
    "key.checking": "Checking the key…",
    "key.state.refused": "The key this browser had was refused: {detail}",
    "key.state.inUse": "In use: the key “{name}”.",
    "key.state.inUseUnnamed": "A key is saved in this browser.",
    "key.state.forgotten": "The key was forgotten. Enter one to go on.",
    "key.error.empty": "Enter a key first.",
    "key.error.refused": "This key was refused: {detail}",
    "key.saved": "Access key saved.",
    "key.forgottenStatus": "Access key forgotten.",

    "sidebar.label": "Conversations",
    "sidebar.new": "New conversation",
    "sidebar.close": "Close the conversation list",
    "sidebar.search.label": "Search conversations by title",
    "sidebar.search.placeholder": "Search titles…",
    "sidebar.import": "Import",
    "sidebar.import.title": "Open a conversation exported as JSON",
    "list.loading": "Loading…",
    "list.empty": "No conversations yet. Your questions will be kept here.",
    "list.noMatch": "No conversation title contains “{q}”.",
    "list.failed": "The list could not be loaded. {detail}",
    "item.untitled": "Untitled conversation",
    "item.rename": "Rename",
    "item.delete": "Delete",
    "item.title.label": "New title",
    "item.save": "Save",
    "item.cancel": "Cancel",
    "item.confirmDelete": "Delete this conversation?",
    "item.renameFailed": "Could not rename it. {detail}",
    "item.deleteFailed": "Could not delete it. {detail}",
    "import.busy": "Importing {name}…",
    "import.done": "Imported “{title}”.",
    "import.failed": "{name} could not be imported. {detail}",
    "import.notJson": "{name} is not a JSON export of a conversation.",

    "conversation.export.md": "Export Markdown",
    "conversation.export.json": "Export JSON",
    "conversation.export.label": "Export this conversation",
    "conversation.loading": "Loading the conversation…",
    "conversation.missing": "That conversation no longer exists. You can start a new one below.",
    "conversation.failed": "The conversation could not be loaded. {detail}",
    "conversation.retryLoad": "Try again",
    "conversation.exportFailed": "The export failed. {detail}",

    "usage.title": "Counted per UTC day by chatproxy's usage ledger; the day turns at 00:00 UTC.",
    "usage.today": { one: "Today: {count} request", other: "Today: {count} requests" },
    "usage.todayAll": { one: "Today, everyone: {count} request", other: "Today, everyone: {count} requests" },
    "usage.tokens": "{n} tokens",
    "usage.tokensOf": "{n} of {limit} tokens/day",
    "usage.costOf": "{cost} of {limit}/day",
    "usage.limit.rpm": "Limit: {rpm} requests a minute",
    "usage.limit.tpm": "Limit: {tpm} tokens a minute",
    "usage.limit.both": "Limits: {rpm} requests and {tpm} tokens a minute",

    "transcript.label": "Questions and answers",
    "empty.title": "Ask a question",
    "empty.lead": "Answers appear as they are written.",
    "empty.sends": "sends,",
    "empty.newline": "starts a new line.",

    "composer.question": "Your question",
    "composer.placeholder": "Ask a question…",
    "composer.persona": "Persona",
    "composer.noPersona": "No persona",
    "composer.model": "Model",
    "composer.stop": "Stop",
    "composer.send": "Send",

    "answer.thinking": "Thinking…",
    "answer.answering": "Answering…",
    "answer.stopped": "Stopped",
    "answer.interrupted": "Interrupted",
    "answer.error": "Error",
    "answer.copy": "Copy",
    "answer.copied": "Copied",
    "answer.copyFailed": "Copy failed",
    "answer.regenerate": "Regenerate",
    "answer.regenerate.title": "Answer the last question again (replaces this answer)",
    "answer.retry": "Retry",
    "answer.retry.title": "Ask this question again",
    "answer.usage": "Tokens: {in} in · {out} out",
    "answer.usageCost": "Tokens: {in} in · {out} out · {cost}",
    "answer.usage.priced": "Cost in US dollars, from the usage the upstream reported.",
    "answer.usage.unpriced": "No price is known for this model.",

    "note.cutOff": "Answer cut off (max_tokens).",
    "note.endedEarly": "Answer ended early: {reason}.",
    "note.empty": "The answer was empty.",
    "note.stoppedPartial": "Stopped: the answer above is partial.",
    "note.stoppedEmpty": "Stopped before any answer arrived.",
    "note.interruptedPartial": "The answer was interrupted: the text above is partial.",
    "note.interruptedEmpty": "The answer was interrupted before any text arrived.",
    "note.unanswered": "No answer was kept for this question.",

    "totals.line": "This conversation: {answers} · {in} in · {out} out",
    "totals.lineCost": "This conversation: {answers} · {in} in · {out} out · {cost}",
    "totals.answers": { one: "{count} answer", other: "{count} answers" },
    "totals.linePartlyPriced": "This conversation: {answers} · {in} in · {out} out · {cost} ({unpriced} without a price)",

    "status.sent": "Question sent, waiting for the answer.",
    "status.finished": "Answer finished.",
    "status.stopped": "Stopped.",
    "status.loaded": "Conversation loaded.",
    "status.new": "New conversation.",
    "status.language": "Language: English.",

    "error.unreachable": "chatproxy could not be reached. Check the connection and try again.",
    "error.connectionLost": "The connection to chatproxy was lost before the answer was complete.",
    "error.streamClosed": "The answer ended early: the stream closed before it was complete.",
    "error.interrupted": "The answer was interrupted. {detail}",
    "error.unknown": "unknown error",
    "error.notAccepted": "The question was not accepted.",
    "error.needKey": "An access key is needed to ask questions here. {detail}",
    "error.modelNotAllowed": "The model “{model}” is not allowed here.",
    "error.tooLong": "The question is too long.",
    "error.tooLongMax": "The question is too long (at most {max} characters).",
    "error.rateLimitedIn": "Rate limited, try again in {seconds} s.",
    "error.rateLimited": "Rate limited, try again in a moment.",
    "error.upstream": "The upstream (OpenAI) could not be reached or failed. {detail}",
    "error.notConfigured": "chatproxy is not configured to reach OpenAI yet. {detail}",
    "error.timeout": "The upstream (OpenAI) timed out. Try again, or ask for a shorter answer.",
    "error.notFound": "This conversation no longer exists. {detail}",
    "error.conversationGone": "This conversation no longer exists. Your next question starts a new one.",
    "error.http": "chatproxy answered with an error (HTTP {status}). {detail}",
    "error.keyRequired": "An access key is needed: use the Key button at the top.",
    "error.limited": "{detail} {retry}",
    "error.limitedPlain": "{reason} {retry}",
    "error.rateLimitedAgain": "Too many requests. {retry}",
    "limit.requests": "Too many requests.",
    "limit.tokensPerMinute": "This access key used its tokens for this minute.",
    "limit.tokensPerDay": "This access key used its tokens for today (UTC).",
    "limit.usdPerDay": "This access key spent its budget for today (UTC).",
    "retry.seconds": "Try again in {n} s.",
    "retry.minutes": "Try again in {n} min.",
    "retry.hours": "Try again in {h} h {m} min.",
    "retry.moment": "Try again in a moment.",
  },

  "zh-CN": {
    "header.conversations": "对话列表",
    "header.language": "语言",
    "banner.open.label": "开放访问：",
    "banner.open.text": "任何能打开本页的人都可以用站长的账户提问。",
    "banner.demo.label": "演示模式：",
    "banner.demo.text": "回答来自内置模拟器，而不是 OpenAI。",

    "key.button": "密钥",
    "key.button.title": "本页发送的访问密钥：更换或忘记",
    "key.button.titleNamed": "访问密钥“{name}”：更换或忘记",
    "key.title.needed": "这个 chatproxy 需要访问密钥",
    "key.title.change": "访问密钥",
    "key.lead": "访问密钥由这个 chatproxy 的站长发放，请向站长索取（站长用 flask keys create 生成密钥）。",
    "key.label": "访问密钥",
    "key.note": "密钥只保存在这个浏览器里，每次请求时发送给这个 chatproxy。",
    "key.save": "保存",
    "key.cancel": "取消",
    "key.forget": "忘记密钥",
    "key.checking": "正在验证密钥…",
    "key.state.refused": "这个浏览器保存的密钥被拒绝了：{detail}",
    "key.state.inUse": "正在使用密钥“{name}”。",
    "key.state.inUseUnnamed": "这个浏览器里保存了一个密钥。",
    "key.state.forgotten": "密钥已忘记。请输入密钥以继续使用。",
    "key.error.empty": "请先输入密钥。",
    "key.error.refused": "这个密钥被拒绝了：{detail}",
    "key.saved": "访问密钥已保存。",
    "key.forgottenStatus": "访问密钥已忘记。",

    "sidebar.label": "对话",
    "sidebar.new": "新对话",
    "sidebar.close": "关闭对话列表",
    "sidebar.search.label": "按标题搜索对话",
    "sidebar.search.placeholder": "搜索标题…",
    "sidebar.import": "导入",
    "sidebar.import.title": "打开以 JSON 格式导出的对话",
    "list.loading": "加载中…",
    "list.empty": "还没有对话。你的提问会保存在这里。",
    "list.noMatch": "没有标题包含“{q}”的对话。",
    "list.failed": "无法加载对话列表。{detail}",
    "item.untitled": "未命名对话",
    "item.rename": "重命名",
    "item.delete": "删除",
    "item.title.label": "新标题",
    "item.save": "保存",
    "item.cancel": "取消",
    "item.confirmDelete": "删除这个对话？",
    "item.renameFailed": "重命名失败。{detail}",
    "item.deleteFailed": "删除失败。{detail}",
    "import.busy": "正在导入 {name}…",
    "import.done": "已导入“{title}”。",
    "import.failed": "无法导入 {name}。{detail}",
    "import.notJson": "{name} 不是对话的 JSON 导出文件。",

    "conversation.export.md": "导出 Markdown",
    "conversation.export.json": "导出 JSON",
    "conversation.export.label": "导出这个对话",
    "conversation.loading": "正在加载对话…",
    "conversation.missing": "这个对话已不存在。你可以在下方开始新的对话。",
    "conversation.failed": "无法加载这个对话。{detail}",
    "conversation.retryLoad": "重试",
    "conversation.exportFailed": "导出失败。{detail}",

    "usage.title": "按 UTC 日统计（chatproxy 的用量记录），每天 UTC 0 点重新计算。",
    "usage.today": "今天：{count} 次请求",
    "usage.todayAll": "今天（所有人）：{count} 次请求",
    "usage.tokens": "{n} 个 token",
    "usage.tokensOf": "{n} / 每日 {limit} 个 token",
    "usage.costOf": "{cost} / 每日 {limit}",
    "usage.limit.rpm": "上限：每分钟 {rpm} 次请求",
    "usage.limit.tpm": "上限：每分钟 {tpm} 个 token",
    "usage.limit.both": "上限：每分钟 {rpm} 次请求、{tpm} 个 token",

    "transcript.label": "问题与回答",
    "empty.title": "提个问题吧",
    "empty.lead": "回答会边生成边显示。",
    "empty.sends": "发送，",
    "empty.newline": "换行。",

    "composer.question": "你的问题",
    "composer.placeholder": "输入你的问题…",
    "composer.persona": "角色",
    "composer.noPersona": "不使用角色",
    "composer.model": "模型",
    "composer.stop": "停止",
    "composer.send": "发送",

    "answer.thinking": "思考中…",
    "answer.answering": "回答中…",
    "answer.stopped": "已停止",
    "answer.interrupted": "已中断",
    "answer.error": "出错",
    "answer.copy": "复制",
    "answer.copied": "已复制",
    "answer.copyFailed": "复制失败",
    "answer.regenerate": "重新生成",
    "answer.regenerate.title": "重新回答最后一个问题（替换这个回答）",
    "answer.retry": "重试",
    "answer.retry.title": "重新提交这个问题",
    "answer.usage": "Token：输入 {in} · 输出 {out}",
    "answer.usageCost": "Token：输入 {in} · 输出 {out} · {cost}",
    "answer.usage.priced": "费用以美元计，按上游报告的用量计算。",
    "answer.usage.unpriced": "这个模型没有已知的价格。",

    "note.cutOff": "回答被截断（max_tokens）。",
    "note.endedEarly": "回答提前结束：{reason}。",
    "note.empty": "回答为空。",
    "note.stoppedPartial": "已停止：以上回答不完整。",
    "note.stoppedEmpty": "在收到任何回答之前已停止。",
    "note.interruptedPartial": "回答被中断：以上内容不完整。",
    "note.interruptedEmpty": "回答在收到任何文字之前被中断。",
    "note.unanswered": "这个问题没有保存下来的回答。",

    "totals.line": "本对话：{answers} · 输入 {in} · 输出 {out}",
    "totals.lineCost": "本对话：{answers} · 输入 {in} · 输出 {out} · {cost}",
    "totals.answers": { one: "{count} 个回答", other: "{count} 个回答" },
    "totals.linePartlyPriced": "本对话：{answers} · 输入 {in} · 输出 {out} · {cost}（{unpriced} 个没有价格）",

    "status.sent": "问题已发送，正在等待回答。",
    "status.finished": "回答完成。",
    "status.stopped": "已停止。",
    "status.loaded": "对话已加载。",
    "status.new": "新对话。",
    "status.language": "语言：中文。",

    "error.unreachable": "无法连接 chatproxy。请检查网络连接后重试。",
    "error.connectionLost": "回答完成之前，与 chatproxy 的连接断开了。",
    "error.streamClosed": "回答提前结束：数据流在完成之前关闭了。",
    "error.interrupted": "回答被中断。{detail}",
    "error.unknown": "未知错误",
    "error.notAccepted": "问题未被接受。",
    "error.needKey": "需要访问密钥才能在这里提问。{detail}",
    "error.modelNotAllowed": "这里不允许使用模型“{model}”。",
    "error.tooLong": "问题太长了。",
    "error.tooLongMax": "问题太长了（最多 {max} 个字符）。",
    "error.rateLimitedIn": "请求过于频繁，请在 {seconds} 秒后重试。",
    "error.rateLimited": "请求过于频繁，请稍后重试。",
    "error.upstream": "无法连接上游服务（OpenAI），或上游出错。{detail}",
    "error.notConfigured": "chatproxy 尚未配置好连接 OpenAI。{detail}",
    "error.timeout": "上游服务（OpenAI）超时。请重试，或要求更短的回答。",
    "error.notFound": "这个对话已不存在。{detail}",
    "error.conversationGone": "这个对话已不存在。你的下一个问题会开始新的对话。",
    "error.http": "chatproxy 返回了错误（HTTP {status}）。{detail}",
    "error.keyRequired": "需要访问密钥：请点击页面顶部的“密钥”按钮。",
    "error.limited": "{reason}{retry}（{detail}）",
    "error.limitedPlain": "{reason}{retry}",
    "error.rateLimitedAgain": "请求过于频繁。{retry}",
    "limit.requests": "请求过于频繁。",
    "limit.tokensPerMinute": "这个访问密钥本分钟的 token 额度已用完。",
    "limit.tokensPerDay": "这个访问密钥今天（UTC）的 token 额度已用完。",
    "limit.usdPerDay": "这个访问密钥今天（UTC）的费用额度已用完。",
    "retry.seconds": "请在 {n} 秒后重试。",
    "retry.minutes": "请在 {n} 分钟后重试。",
    "retry.hours": "请在 {h} 小时 {m} 分钟后重试。",
    "retry.moment": "请稍后重试。",
  },
};

const listeners = [];
let current = initialLanguage(); // the language shown now

function readStored() {
  try {
    return window.localStorage.getItem(STORAGE_KEY);
  } catch (e) {
    return null; // storage may be off (private mode, a policy): use the browser's choice
  }
}

// The reader's own choice first, then the browser's languages: any zh* is Chinese.
function initialLanguage() {
  const stored = readStored();
  if (LANGUAGES.indexOf(stored) !== -1) return stored;
  const wanted = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language];
  for (const tag of wanted) {
    if (/^zh\b/i.test(tag || "")) return "zh-CN";
    if (/^en\b/i.test(tag || "")) return "en";
  }
  return "en";
}

// The text of `key` in the current language (English if it has none there),
// its {name} placeholders filled from `params`. A param may itself be a text
// to translate, {key, params}. A missing key shows itself.
export function t(key, params) {
  let text = key in TEXTS[current] ? TEXTS[current][key] : TEXTS.en[key];
  if (text === undefined) return key;
  params = params || {};
  if (typeof text === "object") text = params.count === 1 ? text.one : text.other;
  return text
    .replace(/\{(\w+)\}/g, (match, name) => {
      if (!(name in params)) return match;
      const value = params[name];
      return value && typeof value === "object" ? t(value.key, value.params) : String(value);
    })
    .trim(); // an empty {detail} at the end leaves no trailing space
}

const ATTRIBUTES = [
  ["data-i18n-placeholder", "placeholder"],
  ["data-i18n-title", "title"],
  ["data-i18n-aria-label", "aria-label"],
];

function paramsOf(element) {
  const raw = element.getAttribute("data-i18n-params");
  if (!raw) return undefined;
  try {
    return JSON.parse(raw);
  } catch (e) {
    return undefined;
  }
}

function translateElement(element) {
  const params = paramsOf(element);
  const key = element.getAttribute("data-i18n");
  if (key) element.textContent = t(key, params);
  for (const [marker, attribute] of ATTRIBUTES) {
    const attributeKey = element.getAttribute(marker);
    if (attributeKey) element.setAttribute(attribute, t(attributeKey, params));
  }
}

const SELECTOR = "[data-i18n], [data-i18n-placeholder], [data-i18n-title], [data-i18n-aria-label]";

// Translates `root` (default: the whole document) and every marked element in it.
export function translate(root) {
  root = root || document.documentElement;
  if (root.matches && root.matches(SELECTOR)) translateElement(root);
  root.querySelectorAll(SELECTOR).forEach(translateElement);
}

function mark(element, marker, key, params) {
  if (element.jquery) element = element[0];
  if (!element) return element;
  if (key) element.setAttribute(marker, key);
  else element.removeAttribute(marker);
  if (params) element.setAttribute("data-i18n-params", JSON.stringify(params));
  else if (params === null) element.removeAttribute("data-i18n-params");
  translateElement(element);
  return element;
}

// Shows t(key, params) as `element`'s text (a DOM element or a jQuery
// object), and keeps it translated when the language changes.
export function set(element, key, params) {
  return mark(element, "data-i18n", key, params || null);
}

// The same for an attribute: "placeholder", "title" or "aria-label".
export function setAttribute(element, attribute, key, params) {
  return mark(element, "data-i18n-" + attribute, key, params);
}

export function setLanguage(wanted, remember) {
  if (LANGUAGES.indexOf(wanted) === -1) return;
  current = wanted;
  document.documentElement.lang = wanted;
  if (remember) {
    try {
      window.localStorage.setItem(STORAGE_KEY, wanted);
    } catch (e) {
      // not remembered, but the switch still works for this page
    }
  }
  translate();
  listeners.forEach((listener) => listener(wanted));
}

// The language shown now: "en" or "zh-CN".
export function language() {
  return current;
}

// The languages there are texts for.
export const languages = LANGUAGES.slice();

// `listener(language)` hears of every switch of language.
export function onChange(listener) {
  listeners.push(listener);
}
