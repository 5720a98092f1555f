// The demo page: a StudyTimeClient behind a form, a big timer, a log, and a
// reports view. Query parameters prefill the form (server, userId, courseId,
// lang, pause=0, idle in seconds, maxRetryDelay in ms, autoconnect=1); never the token. A server
// address on another host (from ?server= or typed) is shown as a warning, and
// the token is sent there only once the user has ticked that they trust it.
// Served by study-time, the page's Content-Security-Policy then blocks the
// connection anyway: the page says so, naming both hosts, and stops trying.

import { DEFAULT_IDLE_TIMEOUT, StudyTimeClient, Status, formatDuration } from "./study-time-client.js";
import { TEXT, serverError } from "./i18n.js";
import { Dashboards } from "./dashboard.js";
import { rememberToken } from "./token-memory.js";


const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const MAX_LOG = 200;

let lang = pickLanguage();
let client = null;
let shownTab = "live"; // the tab shown: each has its own title

function pickLanguage() {
  const wanted = params.get("lang") || localStorage.getItem("study-time-lang") || navigator.language || "en";
  return wanted.toLowerCase().startsWith("zh") ? "zh" : "en";
}

function t() {
  return TEXT[lang];
}

// Language.

function applyLanguage() {
  const text = t();
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  renderTitles();
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = text[el.dataset.i18n];
  for (const el of document.querySelectorAll("[data-i18n-label]")) el.setAttribute("aria-label", text[el.dataset.i18nLabel]);
  for (const el of document.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = text[el.dataset.i18nPlaceholder];
  }
  $("lang").textContent = text.switchTo;
  renderCrossHost();
  renderStatus();
  renderLogEmpty();
  for (const item of $("log").querySelectorAll("li[data-direction]")) {
    item.querySelector(".msg").textContent = logText(item.entry);
  }
  dashboards.setLanguage(lang);
}

$("lang").addEventListener("click", () => {
  lang = lang === "zh" ? "en" : "zh";
  localStorage.setItem("study-time-lang", lang);
  applyLanguage();
});

// Addresses.

/** The WebSocket endpoint for what the user typed: empty means this page's host. */
function socketUrl(typed) {
  const text = typed.trim();
  const pageScheme = location.protocol === "https:" ? "wss:" : "ws:";
  let url;
  if (!text) {
    url = new URL(`${pageScheme}//${location.host}`);
  } else if (/^(wss?|https?):\/\//i.test(text)) {
    url = new URL(text);
  } else {
    url = new URL(`${pageScheme}//${text}`);
  }
  if (url.protocol === "http:") url.protocol = "ws:";
  if (url.protocol === "https:") url.protocol = "wss:";
  if (url.pathname === "/" || url.pathname === "") url.pathname = "/api/study-time";
  url.search = "";
  return url.toString();
}

function httpBase(typed) {
  const url = new URL(socketUrl(typed));
  return `${url.protocol === "wss:" ? "https:" : "http:"}//${url.host}`;
}

// Another host. A link can prefill ?server= with any address, so a learner
// could be led to type their token into a page that sends it elsewhere: the
// page names the other host next to the token field and sends no token there
// until the user has ticked that they trust that very host.

let trustedHost = null; // the other host the user ticked; changing the address unticks
// Other hosts the browser refused to connect to (the page's connect-src, see
// the securitypolicyviolation listener below). The policy holds until the page
// is reloaded, so a blocked host stays blocked.
const blockedHosts = new Set();

/** The host the typed address points to when it is not this page's own (host:port), else null. */
function otherHost(typed) {
  let host;
  try {
    host = new URL(httpBase(typed)).host;
  } catch {
    return null; // an invalid address sends nothing; connect() says it is invalid
  }
  return host === location.host ? null : host;
}

/** Whether the token (if any) may go to the address typed: this page's host, or one the user ticked. */
function tokenMayGo() {
  const host = otherHost($("server").value);
  return host === null || host === trustedHost || !$("token").value;
}

function renderCrossHost() {
  const text = t();
  const host = otherHost($("server").value);
  if (host !== trustedHost) trustedHost = null; // the tick was for another address: ask again
  $("cross-host").hidden = host === null;
  const ok = $("cross-host-ok");
  ok.checked = host !== null && host === trustedHost;
  // The form's validity blocks Connect (with this message) while a token would go unconfirmed.
  ok.setCustomValidity(tokenMayGo() ? "" : text.crossHostRequired);
  if (host === null) return;
  const blocked = blockedHosts.has(host);
  $("cross-host").dataset.state = blocked ? "blocked" : "confirm";
  $("cross-host-ok").closest("label").hidden = blocked; // ticked already, and it cannot help
  if (blocked) {
    $("cross-host-text").replaceChildren(...blockedWords(host));
    return;
  }
  const strong = document.createElement("strong");
  strong.textContent = host;
  $("cross-host-text").replaceChildren(text.crossHost, " ", strong, document.createElement("br"), text.crossHostRisk);
  $("cross-host-confirm").textContent = text.crossHostConfirm(host);
}

/** The explanation for a blocked host, as nodes: both hosts in bold, the other's page as a link. */
function blockedWords(host) {
  const page = `${httpBase(host)}/`;
  const parts = t().blocked(location.host, host, page);
  return parts.map((part, i) => {
    if (i % 2 === 0) return part; // the words between the hosts and the link
    const el = document.createElement(part === page ? "a" : "strong");
    el.textContent = part;
    if (part === page) el.href = page;
    return el;
  });
}

// The browser tells the page when its Content-Security-Policy blocked a
// connection (the socket, or a report request) and names the URL. The client
// stops reconnecting by itself (study-time-client.js); the page names the host
// it came from and the one it could not reach. Only the host is kept: the
// blocked URL carries the query (and the token, if it could not go as a
// subprotocol). Copies of the page served
// without this policy (from file:// or another static host) never get here:
// they connect, once the token is confirmed.
document.addEventListener("securitypolicyviolation", (event) => {
  const directive = event.effectiveDirective || event.violatedDirective || "";
  if (!directive.startsWith("connect-src")) return;
  let host;
  try {
    host = new URL(event.blockedURI).host;
  } catch {
    return;
  }
  if (host === location.host || blockedHosts.has(host)) return;
  blockedHosts.add(host);
  renderCrossHost();
  dashboards.refresh(); // says "blocked" instead of "could not load"
});

$("server").addEventListener("input", renderCrossHost);
$("token").addEventListener("input", renderCrossHost);
$("cross-host-ok").addEventListener("change", () => {
  trustedHost = $("cross-host-ok").checked ? otherHost($("server").value) : null;
  renderCrossHost();
});

// The live view.

function connect() {
  disconnect();
  const form = $("settings");
  if (!form.reportValidity()) return; // includes an unconfirmed token for another host
  let url;
  try {
    url = socketUrl($("server").value);
  } catch {
    showReason({ kind: "invalid_url", error: null });
    return;
  }
  const maxRetryDelay = Number(params.get("maxRetryDelay")) || undefined;
  client = new StudyTimeClient({
    url,
    userId: $("userId").value.trim(),
    courseId: $("courseId").value.trim(),
    token: $("token").value || null,
    pauseWhenHidden: $("pause").checked,
    ...(params.get("idle") ? { idleTimeout: idleTimeoutMs() } : {}),
    ...(maxRetryDelay ? { maxRetryDelay, initialRetryDelay: Math.min(1000, maxRetryDelay) } : {}),
    onStatus: renderStatus,
    onStudyTime: renderTime,
    onTick: renderTime,
    onLog: addLog,
  });
  window.studyTimeClient = client; // for the console (and the browser tests)
  client.start();
}

/** The idle timeout: ?idle= in seconds, else the client's default (5 min). */
function idleTimeoutMs() {
  const seconds = Number(params.get("idle"));
  return seconds > 0 ? seconds * 1000 : DEFAULT_IDLE_TIMEOUT;
}

function disconnect() {
  if (client) client.stop();
}

$("settings").addEventListener("submit", (event) => {
  event.preventDefault();
  connect();
});
$("disconnect").addEventListener("click", disconnect);
$("pause").addEventListener("change", () => {
  if (client) client.options.pauseWhenHidden = $("pause").checked;
  renderStatus();
});

function renderTime() {
  $("time").textContent = formatDuration(client ? client.displayTime : 0);
}

function renderStatus() {
  const text = t();
  const status = client ? client.status : Status.IDLE;
  let words = text.status[status];
  if (status === Status.RECONNECTING && client.retry) {
    const left = Math.max(0, Math.ceil((client.retry.at - Date.now()) / 1000));
    words = words(left, client.retry.attempt);
  }
  $("status").textContent = words;
  $("status").dataset.status = status;
  renderPause(status);
  $("dot").dataset.status = status;
  const active = status !== Status.IDLE && status !== Status.STOPPED;
  $("disconnect").disabled = !active;
  $("connect").disabled = active; // one connection at a time: Disconnect first
  if (client && client.lastClose) showReason(client.lastClose);
  else $("reason").hidden = true;
  $("session").textContent =
    client && status === Status.CONNECTED && client.sessionId
      ? text.session(client.sessionId.slice(0, 8), client.heartbeatInterval)
      : "";
  renderTime();
}

/** Why counting is paused, in words a learner can act on (hidden unless paused). */
function renderPause(status) {
  const reason = status === Status.PAUSED && client ? client.pauseReason : null;
  $("paused").hidden = !reason;
  $("paused").dataset.reason = reason || "";
  const minutes = Math.round((client ? client.options.idleTimeout : idleTimeoutMs()) / 6000) / 10;
  $("active-only").textContent = t().activeOnly(minutes, client ? client.options.pauseWhenHidden : $("pause").checked);
  if (!reason) return;
  const words = t().pausedBecause[reason];
  $("paused").textContent = typeof words === "function" ? words(minutes) : words;
}

function showReason(close) {
  const text = t();
  $("reason").hidden = false;
  $("reason-text").textContent = text.kind[close.kind] || close.kind;
  $("reason-text").dataset.kind = close.kind;
  const parts = [];
  if (close.code) parts.push(`${close.code}`);
  // The server's message is English: a known error code is worded in the page's language.
  if (close.error) parts.push(serverError(lang, close.error.code, close.error.message));
  $("reason-detail").textContent = parts.join(" · ");
}

// Refresh the countdown while waiting to reconnect.
setInterval(() => {
  if (client && client.status === Status.RECONNECTING) renderStatus();
}, 1000);

function clock(date) {
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

function addLog(entry) {
  const list = $("log");
  list.querySelector(".empty")?.remove();
  const item = document.createElement("li");
  item.className = entry.direction;
  const arrow = { in: "←", out: "→", info: "•" }[entry.direction];
  for (const [cls, value] of [["at", clock(entry.time)], ["dir", arrow], ["msg", logText(entry)]]) {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = value;
    item.append(span);
  }
  if (entry.message) item.dataset.type = entry.message.type;
  item.dataset.direction = entry.direction;
  item.entry = entry; // worded again when the language changes
  list.prepend(item); // newest first
  while (list.children.length > MAX_LOG) list.lastElementChild.remove();
}

/** A log line in the page's language, from what the client and the server said (English `text` otherwise). */
function logText(entry) {
  const words = t().logText;
  const event = entry.event;
  const message = entry.message;
  if (event) {
    switch (event.name) {
      case "connecting":
        return words.connecting(event.url);
      case "closed":
        // The close reason is the server's English: the page words it by its code.
        return words.closed(event.code, event.reason ? t().kind[event.kind] || event.reason : "");
      case "reconnecting":
        return words.reconnecting(formatNumber(event.delay / 1000, 1), event.attempt);
      case "closing":
        return words.closing(t().kind[event.why] || event.why);
      case "blocked":
        return words.blocked(event.host);
      case "idle":
        return words.idle(event.minutes);
      default:
        return typeof words[event.name] === "string" ? words[event.name] : entry.text;
    }
  }
  if (!message) return entry.text;
  switch (message.type) {
    case "heartbeat":
      return words.heartbeat;
    case "connected":
      return words.connected(message.studyTime, message.heartbeatInterval);
    case "heartbeat_response":
      return message.status === "success"
        ? words.heartbeatOk(message.studyTime)
        : words.heartbeatRefused(message.code, serverError(lang, message.code, message.message));
    case "error":
      return words.error(message.code, serverError(lang, message.code, message.message));
    default:
      return entry.text;
  }
}

function formatNumber(value, digits) {
  return value.toFixed(digits);
}

function renderLogEmpty() {
  const list = $("log");
  const empty = list.querySelector(".empty");
  if (list.children.length === 0 || empty) {
    list.replaceChildren();
    const item = document.createElement("li");
    item.className = "empty";
    item.textContent = t().logEmpty;
    list.append(item);
  }
}

$("clear-log").addEventListener("click", () => {
  $("log").replaceChildren();
  renderLogEmpty();
});

// Tabs.

const dashboards = new Dashboards({
  root: $("view-reports"),
  lang,
  // What the live view's form says: the server, the credential, the ids.
  form: () => ({
    server: $("server").value,
    token: $("token").value,
    userId: $("userId").value.trim(),
    courseId: $("courseId").value.trim(),
  }),
  httpBase,
  // Whether the token may go to that server and whether the page's policy blocks it.
  reach: () => {
    if (!tokenMayGo()) return { state: "confirm", words: t().crossHostRequired };
    const host = otherHost($("server").value);
    if (blockedHosts.has(host)) return { state: "blocked", words: blockedWords(host) };
    return null;
  },
});
window.studyTimeDashboards = dashboards; // for the console (and the browser tests)

/** The page's title and heading say what the shown tab is (the live demo or the reports). */
function renderTitles() {
  const page = t().page[shownTab];
  document.title = page.doc;
  $("page-title").textContent = page.title;
  $("page-subtitle").textContent = page.subtitle;
}

function showTab(name) {
  shownTab = name;
  renderTitles();
  for (const tab of ["live", "reports"]) {
    $(`tab-${tab}`).setAttribute("aria-selected", String(tab === name));
    $(`view-${tab}`).hidden = tab !== name;
  }
  dashboards.setVisible(name === "reports");
}

$("tab-live").addEventListener("click", () => showTab("live"));
$("tab-reports").addEventListener("click", () => showTab("reports"));

// Start-up: prefill from the query string.

$("server").value = params.get("server") || location.host;
$("userId").value = params.get("userId") || "";
$("courseId").value = params.get("courseId") || "";
// No token from the query string: credentials do not belong in URLs (history, logs).
// The token typed is remembered for this tab's session (token-memory.js).
rememberToken($("token"), $("token-memory"), $("forget-token"), () => {
  renderCrossHost();
  dashboards.refresh();
});
if (params.get("pause") === "0") $("pause").checked = false;
if (params.get("tab") === "reports") showTab("reports");
applyLanguage(); // also shows the warning when ?server= names another host
if (params.get("autoconnect") === "1" && $("userId").value && $("courseId").value) connect();
