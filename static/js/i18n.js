/*
 * The page in English or simplified Chinese: the functions that put
 * texts.js's texts on the page and switch between the languages.
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
 * The texts themselves are texts.js's.
 */
import { TEXTS } from "./texts.js";

const STORAGE_KEY = "chatproxy.lang";
const LANGUAGES = ["en", "zh-CN"];

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

// Adds `more` ({en: {...}, "zh-CN": {...}}) to the texts: another page's own
// (the console's), kept out of the Q&A page.
export function addTexts(more) {
  for (const language of LANGUAGES) Object.assign(TEXTS[language], more[language] || {});
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
