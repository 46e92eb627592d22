/*
 * Copying text for the reader: an answer's Copy, and each code block's.
 */
import { t } from "./i18n.js";

const $ = window.jQuery;

// navigator.clipboard exists only on https and localhost; plain-http
// deployments fall back to selecting text in a hidden textarea.
export function copyText(text) {
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

// Shows t(key) on `$button` for 1.5 s ("Copied"), then t(restoreKey) again.
export function flash($button, key, restoreKey) {
  $button.text(t(key));
  clearTimeout($button.data("timer"));
  $button.data("timer", setTimeout(() => $button.text(t(restoreKey)), 1500));
}
