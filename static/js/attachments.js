/*
 * Images and files that go with the next question: pasted (Ctrl+V of a
 * screenshot), dropped on the question box, or picked with the paper clip.
 * They wait under the box as thumbnails (images) and chips with name and
 * size (files), each removable, and are sent with the question in its JSON
 * body (`images`: data URLs, `files`: {name, content_base64}). The server
 * checks each by its bytes; here only the kind decides where it goes.
 * In the transcript, images show as thumbnails; a click shows one full size.
 */
import * as api from "./api.js";
import * as i18n from "./i18n.js";

const $ = window.jQuery;
const t = i18n.t;
const IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp", "image/gif"];

const $form = $("#ask-form");
const $question = $("#question");
const $tray = $("#attachment-tray");
const $picker = $("#attach-input");
const viewer = document.getElementById("image-viewer");

let pending = []; // {kind, name, size, dataUrl, previewUrl}

export function start() {
  $("#attach").on("click", () => $picker.trigger("click"));
  $picker.on("change", function () {
    addFiles(this.files);
    this.value = ""; // the same file may be picked again
  });
  $question.on("paste", function (event) {
    const files = event.originalEvent.clipboardData && event.originalEvent.clipboardData.files;
    if (files && files.length) {
      event.preventDefault(); // a screenshot is an attachment, not text
      addFiles(files);
    }
  });
  $form.on("dragover", function (event) {
    event.preventDefault();
    $form.addClass("dropping");
  });
  $form.on("dragleave drop", () => $form.removeClass("dropping"));
  $form.on("drop", function (event) {
    event.preventDefault();
    const transfer = event.originalEvent.dataTransfer;
    if (transfer && transfer.files.length) addFiles(transfer.files);
  });
  $(viewer).on("click", () => viewer.close());
}

// Reads each file (images as data URLs, files as base64) and shows it in the tray.
export function addFiles(files) {
  Array.from(files).forEach((file) => {
    const reader = new FileReader();
    reader.onload = () => {
      const kind = IMAGE_TYPES.indexOf(file.type) !== -1 ? "image" : "file";
      // Shown from a blob: URL (CSP img-src needs no data: for it); sent as the data URL.
      const previewUrl = kind === "image" ? URL.createObjectURL(file) : "";
      pending.push({ kind: kind, name: file.name || kind, size: file.size, dataUrl: reader.result, previewUrl: previewUrl });
      drawTray();
    };
    reader.readAsDataURL(file);
  });
}

// What waits to be sent, taken out of the tray (it is empty afterwards).
export function take() {
  const taken = pending;
  pending = [];
  drawTray();
  return taken;
}

// Attachments of a question that was not kept go back into the tray.
export function giveBack(items) {
  if (!items || !items.length) return;
  pending = items.concat(pending);
  drawTray();
}

// The body fields for `items`: {images: [data URL], files: [{name, content_base64}]}.
export function bodyFields(items) {
  const fields = {};
  const images = items.filter((item) => item.kind === "image").map((item) => item.dataUrl);
  const files = items
    .filter((item) => item.kind === "file")
    .map((item) => ({ name: item.name, content_base64: item.dataUrl.slice(item.dataUrl.indexOf(",") + 1) }));
  if (images.length) fields.images = images;
  if (files.length) fields.files = files;
  return fields;
}

function drawTray() {
  $tray.empty().prop("hidden", !pending.length);
  pending.forEach((item, index) => {
    const $item = attachmentElement(item, item.previewUrl);
    const $remove = $("<button>", {
      type: "button",
      class: "attachment-remove",
      text: "×",
      "aria-label": t("attach.remove", { name: item.name }),
      title: t("attach.remove", { name: item.name }),
    });
    $remove.on("click", () => {
      pending.splice(index, 1);
      drawTray();
      $question.trigger("focus");
    });
    $tray.append($item.append($remove));
  });
}

// An attachment as the page shows it: a thumbnail (click: full size) or a chip.
// `src` is the image's URL (a blob: URL of the file picked, or of the server's copy).
export function attachmentElement(item, src) {
  if (item.kind === "image") {
    const $img = $("<img>", { class: "attachment-thumb", alt: item.name || t("attach.image"), src: src || "" });
    $img.on("click", () => showFull($img.attr("src"), item.name));
    return $("<span>", { class: "attachment attachment-image" }).append($img);
  }
  return $("<span>", { class: "attachment attachment-file" }).append(
    $("<span>", { class: "attachment-name", text: item.name }),
    $("<span>", { class: "attachment-size", text: formatSize(item.size) })
  );
}

// The attachments of a stored question (`message.attachments`), its images
// fetched with the access key (an <img> cannot send it) and shown as blobs.
export function storedElements(attachments, attachmentsUrl) {
  return (attachments || []).map((item) => {
    const $item = attachmentElement(item, item.url || "");
    if (item.kind === "image" && !item.url) {
      api
        .authorizedFetch(attachmentsUrl + "/" + item.id)
        .then((response) => (response.ok ? response.blob() : null))
        .then((blob) => {
          if (blob) $item.find("img").attr("src", URL.createObjectURL(blob));
        })
        .catch(() => {});
    }
    return $item;
  });
}

function showFull(src, name) {
  if (!viewer || !src) return;
  $(viewer).find("img").attr({ src: src, alt: name || t("attach.image") });
  viewer.showModal();
}

export function formatSize(bytes) {
  if (bytes < 1024) return bytes + " B";
  if (bytes < 1024 * 1024) return (bytes / 1024).toFixed(1) + " KB";
  return (bytes / 1024 / 1024).toFixed(1) + " MB";
}
