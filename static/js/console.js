/*
 * The owner's console (templates/admin.html): the entry module.
 *
 *   console.js           starts the page: the admin key, the language, the sections
 *   console-keys.js      Keys: the list with today's spend, make, edit, revoke
 *   console-spending.js  Spending: stacked charts per day, the top of today, CSV
 *   console-traffic.js   Traffic: requests per hour by outcome, times, upstreams, errors
 *   console-requests.js  Requests: the request log, filtered, a page at a time
 *   console-personas.js  Personas: the files' (read-only) and the console's own
 *   console-texts.js     the console's texts (the shared ones are texts.js's)
 *
 * The console asks /api/admin/... with an admin key it keeps in this browser
 * apart from the Q&A page's key ("chatproxy.adminKey"), sent as
 * `Authorization: Bearer ...` only: never in a URL, never a cookie. Whatever a
 * key or a model is named is shown as text (jQuery .text()), never as HTML.
 */
import * as i18n from "./i18n.js";
import * as api from "./api.js";
import { CONSOLE_TEXTS } from "./console-texts.js";
import { Keys } from "./console-keys.js";
import { Spending } from "./console-spending.js";
import { Requests } from "./console-requests.js";
import { Traffic } from "./console-traffic.js";
import { Personas } from "./console-personas.js";

document.documentElement.classList.remove("no-js");
i18n.addTexts(CONSOLE_TEXTS);

const $ = window.jQuery;
const body = document.body;
const urls = {
  keys: body.getAttribute("data-keys-url"),
  spending: body.getAttribute("data-spending-url"),
  top: body.getAttribute("data-top-url"),
  csv: body.getAttribute("data-csv-url"),
  requests: body.getAttribute("data-requests-url"),
  traffic: body.getAttribute("data-traffic-url"),
  personas: body.getAttribute("data-personas-url"),
};

/* ---------- The admin key ---------- */

const STORAGE = "chatproxy.adminKey";
let memoryKey = null; // when localStorage is off

export const adminKey = {
  get() {
    try {
      return window.localStorage.getItem(STORAGE) || memoryKey;
    } catch (e) {
      return memoryKey;
    }
  },
  save(key) {
    memoryKey = key;
    try {
      window.localStorage.setItem(STORAGE, key);
    } catch (e) {
      // kept in memory for this page
    }
  },
  forget() {
    memoryKey = null;
    try {
      window.localStorage.removeItem(STORAGE);
    } catch (e) {
      // nothing was kept
    }
  },
};

// A request of the console's API with the admin key; a 401 or 403 asks for another.
function call(method, url, data) {
  return api.request(method, url, data, { key: adminKey.get() || "" }).catch((error) => {
    if (error.status === 401 || error.status === 403) showLogin(error);
    throw error;
  });
}

// The CSV (or any file) at `url` as a download, fetched with the key in a header.
async function download(url, name) {
  let response;
  try {
    response = await fetch(url, { headers: { Authorization: "Bearer " + (adminKey.get() || "") } });
  } catch (e) {
    throw new api.ApiError(0, null);
  }
  if (!response.ok) throw await api.errorOf(response);
  const blob = await response.blob();
  const link = $("<a>", { href: URL.createObjectURL(blob), download: name, class: "visually-hidden" });
  link.appendTo(document.body)[0].click();
  setTimeout(() => {
    URL.revokeObjectURL(link.attr("href"));
    link.remove();
  }, 1000);
}

const $login = $("#console-login");
const $loginError = $("#console-login-error");
const $input = $("#console-key-input");
const SECTIONS = ["keys", "spending", "traffic", "requests", "personas"];
let loggedIn = false;

function showLogin(error) {
  loggedIn = false;
  showSection();
  $login.prop("hidden", false);
  if (error && error.status === 403) i18n.set($loginError, "console.login.notAdmin");
  else if (error && error.status === 401 && adminKey.get()) {
    i18n.set($loginError, "console.login.refused", { detail: error.message });
  }
  $input.trigger("focus");
}

async function checkAndSave(key) {
  if (!key) {
    i18n.set($loginError, "console.login.empty");
    return;
  }
  i18n.set($loginError, "console.login.checking");
  try {
    const list = await api.request("GET", urls.keys, undefined, { key: key });
    adminKey.save(key);
    $input.val("");
    $loginError.text("").removeAttr("data-i18n");
    showConsole(list);
  } catch (error) {
    if (error.status === 403) i18n.set($loginError, "console.login.notAdmin");
    else i18n.set($loginError, "console.login.refused", { detail: error.message || String(error.status) });
  }
}

$("#console-login-form").on("submit", (event) => {
  event.preventDefault();
  checkAndSave($.trim($input.val()));
});

$("#console-key-button").on("click", () => {
  adminKey.forget();
  $("#console-key-button").prop("hidden", true);
  $loginError.text("").removeAttr("data-i18n");
  showLogin(null);
});

/* ---------- Sections ---------- */

const keys = new Keys({ urls: urls, call: call, onChange: () => spending.refresh() });
const spending = new Spending({ urls: urls, call: call, download: download });
const requests = new Requests({ urls: urls, call: call });
const traffic = new Traffic({ urls: urls, call: call });
const personas = new Personas({ urls: urls, call: call });
const loaded = {}; // the sections loaded once shown: Traffic, Requests, Personas

function showConsole(list) {
  loggedIn = true;
  $login.prop("hidden", true);
  const held = adminKey.get() || "";
  const mine = (list.data || []).find((k) => held.indexOf(k.prefix) === 0);
  const $button = $("#console-key-button").prop("hidden", false);
  if (mine) i18n.set($("#console-key-name"), "console.key.named", { name: mine.name });
  $button.attr("title", i18n.t("console.key.button.title"));
  keys.show(list);
  showSection();
  spending.refresh();
}

// One section at a time, named by the URL's #keys or #spending (so each has a link).
function showSection() {
  let section = window.location.hash.slice(1);
  if (SECTIONS.indexOf(section) === -1) section = SECTIONS[0];
  $("#console-nav").prop("hidden", !loggedIn);
  for (const name of SECTIONS) $("#" + name).prop("hidden", !loggedIn || name !== section);
  $(".console-tab").each(function () {
    if (this.getAttribute("data-section") === section) this.setAttribute("aria-current", "page");
    else this.removeAttribute("aria-current");
  });
  if (loggedIn && section === "spending") spending.render(); // a chart drawn while hidden has no size
  if (loggedIn && section === "traffic") {
    if (loaded.traffic) traffic.render();
    else traffic.refresh();
    loaded.traffic = true;
  }
  if (loggedIn && section === "personas" && !loaded.personas) {
    loaded.personas = true;
    personas.refresh();
  }
  if (loggedIn && section === "requests" && !loaded.requests) {
    loaded.requests = true;
    requests.refresh();
  }
}

$(window).on("hashchange", showSection);

/* ---------- Languages ---------- */

function showLanguage(language) {
  $(".language-option").each(function () {
    this.setAttribute("aria-pressed", String(this.getAttribute("data-language") === language));
  });
}

$(".language-option").on("click", function () {
  i18n.setLanguage(this.getAttribute("data-language"), true);
});
i18n.onChange(showLanguage);
i18n.onChange(() => {
  keys.render();
  spending.render();
  requests.render();
  traffic.render();
  personas.render();
});

/* ---------- Start ---------- */

i18n.setLanguage(i18n.language(), false);
showLanguage(i18n.language());
if (adminKey.get()) {
  call("GET", urls.keys).then(showConsole, () => {});
} else {
  showLogin(null);
}
