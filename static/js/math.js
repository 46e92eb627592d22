/*
 * Formulas in answers: found by a marked extension, drawn by KaTeX.
 *
 * Delimiters, as models write them: `$...$` and `\(...\)` inline, `$$...$$`
 * and `\[...\]` displayed (on lines of their own, or inside a paragraph).
 * A dollar is a formula's only when it reads as one, by pandoc's rule: the
 * opening `$` has a non-space character right after it, the closing `$` one
 * right before it, and no digit right after it; so "$5 and $10" stays text.
 * marked runs its own tokenizers for code spans and code blocks, so a `$`
 * in code is never read as math.
 *
 * Two steps, so that the sanitizer sees no KaTeX output and the strict
 * Content-Security-Policy holds:
 *  1. `mathExtension` turns a formula into a placeholder holding its TeX,
 *     <span class="math" data-display="false">TeX as text</span>, that goes
 *     through DOMPurify like the rest of the answer;
 *  2. `renderMath(element)`, once the sanitized HTML is in the page, has
 *     KaTeX draw each placeholder in place (`katex.render`, which builds DOM
 *     nodes and sets their styles through the CSSOM, `element.style`, which
 *     `style-src 'self'` allows; only a `style="..."` attribute in markup
 *     would be refused; see `draw`). KaTeX runs with `trust: false`: `\href`,
 *     `\includegraphics`, `\htmlClass` and the like are shown as unsupported
 *     commands, never made into links or elements.
 * A formula KaTeX cannot parse (or one still arriving) stays as its TeX text.
 */

// Inline: $...$ (pandoc's rule above), $$...$$, \(...\), \[...\]. The content
// may hold backslash escapes (\$ is a dollar inside a formula).
const INLINE = [
  { re: /^\$\$((?:\\[\s\S]|[^\\$])+?)\$\$/, display: true },
  { re: /^\$(?![\s$])((?:\\[\s\S]|[^\\$\n]|\n(?!\n))+?)\$(?!\d)/, display: false, dollar: true },
  { re: /^\\\(((?:\\[^)]|[^\\])+?)\\\)/, display: false },
  { re: /^\\\[((?:\\[^\]]|[^\\])+?)\\\]/, display: true },
];

// Displayed, as a block of its own: the delimiters open a line. A blank line
// ends the search (TeX refuses one inside a formula), so a stray "$$" does
// not swallow the paragraphs after it.
const BLOCK = [
  /^ {0,3}\$\$((?:\\[\s\S]|[^\\$\n]|\n(?![ \t]*\n))+?)\$\$[ \t]*(?:\n+|$)/,
  /^ {0,3}\\\[((?:\\[^\]]|[^\\\n]|\n(?![ \t]*\n))+?)\\\][ \t]*(?:\n+|$)/,
];

const INLINE_START = /\$|\\\(|\\\[/;
const BLOCK_START = /^ {0,3}(?:\$\$|\\\[)/m;

// KaTeX's limits keep a hostile formula from covering the page or looping.
const KATEX_OPTIONS = {
  throwOnError: true,
  trust: false,
  strict: "ignore",
  maxSize: 20, // em: \rule{1000em}{1000em} is drawn this big at most
  maxExpand: 1000,
  output: "htmlAndMathml", // the MathML copy is for screen readers (katex.min.css hides it)
};

function escapeHtml(text) {
  return String(text)
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");
}

function placeholder(token) {
  const tag = token.display ? "div" : "span";
  return (
    "<" + tag + ' class="math" data-display="' + token.display + '">' +
    escapeHtml(token.source) + "</" + tag + ">" + (token.block ? "\n" : "")
  );
}

// `source`, what the model wrote, delimiters included, is what shows if KaTeX cannot draw it.
function token(raw, display, block) {
  return { type: block ? "mathBlock" : "mathInline", raw, display, block, source: raw.trim() };
}

// The marked extension (marked's `extensions` option; see marked's docs,
// "Custom Extensions").
export const mathExtension = {
  extensions: [
    {
      name: "mathBlock",
      level: "block",
      start(src) {
        const match = BLOCK_START.exec(src);
        return match ? match.index : undefined;
      },
      tokenizer(src) {
        for (const re of BLOCK) {
          const match = re.exec(src);
          if (match && match[1].trim()) return token(match[0], true, true);
        }
        return undefined;
      },
      renderer: placeholder,
    },
    {
      name: "mathInline",
      level: "inline",
      start(src) {
        const match = INLINE_START.exec(src);
        return match ? match.index : undefined;
      },
      tokenizer(src) {
        for (const rule of INLINE) {
          const match = rule.re.exec(src);
          if (!match || !match[1].trim()) continue;
          // pandoc: no space before the closing dollar ("$5 and $10" is money).
          if (rule.dollar && /\s$/.test(match[1])) return undefined;
          return token(match[0], rule.display, false);
        }
        return undefined;
      },
      renderer: placeholder,
    },
  ],
};

// The formulas renderMath drew last in each element, by display and TeX:
// while an answer streams it is redrawn every frame, and a formula already
// drawn is moved into its new place rather than drawn again.
const drawn = new WeakMap(); // element -> Map(key -> [drawn .math nodes])

// Draws the formulas of `element` (placeholders from mathExtension) with
// KaTeX; a formula it cannot parse keeps its TeX, with KaTeX's reason as its
// tooltip.
export function renderMath(element) {
  const before = drawn.get(element) || new Map();
  const now = new Map();
  element.querySelectorAll(".math:not([data-rendered])").forEach((node) => {
    const display = node.getAttribute("data-display") === "true";
    const source = node.textContent;
    const key = display + source;
    let done = (before.get(key) || []).pop();
    if (done) {
      node.replaceWith(done);
    } else {
      try {
        draw(texOf(source), node, display);
        node.setAttribute("data-rendered", "true");
        done = node;
      } catch (error) {
        node.setAttribute("data-rendered", "false");
        node.textContent = source;
        node.title = error && error.message ? error.message : String(error);
        return;
      }
    }
    now.set(key, [...(now.get(key) || []), done]);
  });
  drawn.set(element, now);
}

// What `katex.render` does, with one step more: KaTeX sets its HTML's styles
// through the CSSOM, but writes a style="" attribute on two elements of its
// MathML copy (\pmb, \fcolorbox), which the CSP refuses (and reports); those
// attributes go before the tree becomes DOM nodes. `__renderToDomTree` is
// KaTeX's API for this ("advanced use cases"): kept to the vendored version.
function draw(tex, node, display) {
  const tree = katex.__renderToDomTree(tex, { ...KATEX_OPTIONS, displayMode: display });
  dropStyleAttributes(tree);
  node.textContent = "";
  node.appendChild(tree.toNode());
}

function dropStyleAttributes(item) {
  if (item.attributes && "style" in item.attributes) delete item.attributes.style;
  (item.children || []).forEach(dropStyleAttributes);
}

// The TeX inside its delimiters: $ $, or two characters each side ($$ $$, \( \), \[ \]).
function texOf(source) {
  const width = source.startsWith("$") && !source.startsWith("$$") ? 1 : 2;
  return source.slice(width, -width);
}
