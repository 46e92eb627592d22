/*
 * Answers as HTML: Markdown rendered by marked, made safe by DOMPurify, its
 * formulas drawn by KaTeX (math.js), its code coloured by highlight.js and
 * given a language and a Copy button (codeblocks.js). The four are the
 * vendored libraries' window globals (marked, DOMPurify, katex, hljs),
 * classic scripts that run before the page's modules.
 */
import { mathExtension, renderMath } from "./math.js";
import { decorateCodeBlocks } from "./codeblocks.js";

const $ = window.jQuery;

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
markdown.use(mathExtension);

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

// `source` as sanitized HTML, formulas still as placeholders (decorateAnswer draws them).
export function renderMarkdown(source) {
  return DOMPurify.sanitize(markdown.parse(source), PURIFY_OPTIONS);
}

// Guessing a language means trying every one, so untagged blocks are only
// guessed once, on the finished answer; tagged blocks are coloured as they grow.
export function highlightCode(element, final) {
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

// What follows the sanitized HTML into `element`: formulas drawn, code given
// its bar and coloured. `final`: the answer is complete.
export function decorateAnswer(element, final) {
  renderMath(element);
  decorateCodeBlocks(element); // before highlight.js adds the language it guessed
  highlightCode(element, final);
}
