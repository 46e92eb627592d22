/*
 * Code blocks in an answer: a bar above each with its language and a Copy
 * button that copies the code's text (what the reader sees, without the
 * colours). Long lines scroll inside the block (answer.css), not the page.
 *
 *   <div class="code-block">
 *     <div class="code-head"><span class="code-language">python</span>
 *       <button class="code-copy">Copy</button></div>
 *     <pre><code class="language-python">...</code></pre>
 *   </div>
 */
import * as i18n from "./i18n.js";
import { copyText, flash } from "./clipboard.js";

const $ = window.jQuery;

// The language the model named after the fence (```python), as marked writes
// it in the class; "" for a block without one.
function languageOf(code) {
  const match = /\blanguage-([\w+#.-]+)/.exec(code.className);
  return match ? match[1] : "";
}

// Puts the bar above each code block of `element` that has none yet.
export function decorateCodeBlocks(element) {
  element.querySelectorAll("pre > code").forEach((code) => {
    const pre = code.parentNode;
    if (pre.parentNode.classList.contains("code-block")) return;
    const $block = $("<div>", { class: "code-block" });
    const $head = $("<div>", { class: "code-head" });
    const $language = $("<span>", { class: "code-language" });
    const language = languageOf(code);
    if (language) $language.text(language);
    else i18n.set($language, "code.plain");
    const $copy = $("<button>", { type: "button", class: "button button-small code-copy" });
    i18n.set($copy, "code.copy");
    i18n.setAttribute($copy, "title", "code.copy.title");
    $copy.on("click", () => {
      copyText(code.textContent).then(
        () => flash($copy, "code.copied", "code.copy"),
        () => flash($copy, "code.copyFailed", "code.copy"),
      );
    });
    pre.replaceWith($block[0]);
    $block.append($head.append($language, $copy), pre);
  });
}
