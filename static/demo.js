// The demo page: a StudyTimeClient behind a form, a big timer, a log, and a
// reports view. Query parameters prefill the form (server, userId, courseId,
// lang, pause=0, maxRetryDelay in ms, autoconnect=1); never the token. A server
// address on another host (from ?server= or typed) is shown as a warning, and
// the token is sent there only once the user has ticked that they trust it.
// Served by study-time, the page's Content-Security-Policy then blocks the
// connection anyway: the page says so, naming both hosts, and stops trying.

import { StudyTimeClient, Status, formatDuration } from "./study-time-client.js";

const TEXT = {
  en: {
    title: "Study time",
    subtitle: "Live demo of the study-time WebSocket client",
    tabLive: "Live",
    tabReports: "Reports",
    cumulative: "Cumulative study time",
    lastClose: "Last close:",
    server: "Server address",
    userId: "User id",
    courseId: "Course id",
    token: "Token",
    tokenHint: "only if the server asks for one",
    crossHost: "The server address is another site, not the one this page came from:",
    crossHostRisk: "The token you type is sent there. Continue only if you trust it.",
    crossHostConfirm: (host) => `Send my token to ${host}`,
    crossHostRequired: "Tick the box to send your token to the other site, or clear the token.",
    blocked: (own, other, url) => [
      "This page can only connect to the server it was loaded from (",
      own,
      "). To use ",
      other,
      ", open ",
      url,
      " instead.",
    ],
    pause: "Pause while this page is hidden",
    connect: "Connect",
    disconnect: "Disconnect",
    log: "Log",
    clearLog: "Clear",
    logEmpty: "Heartbeats and replies appear here.",
    refresh: "Refresh",
    myCourses: "My courses",
    leaderboard: "Course leaderboard",
    course: "Course",
    time: "Time",
    sessions: "Sessions",
    lastStudied: "Last studied",
    rank: "#",
    learner: "Learner",
    footer: "The client library is",
    switchTo: "中文",
    session: (id, every) => `Session ${id} · heartbeat every ${every} s`,
    reportsFor: (user, course) => `Learner ${user} · course ${course}`,
    needIds: "Enter a user id and a course id on the Live tab first.",
    loading: "Loading…",
    noRows: "No study records yet.",
    reportsMissing: "Reports are not available on this server yet.",
    reportsDenied: "Not authorised to see these reports: check the token.",
    reportsFailed: (why) => `Could not load the reports (${why}).`,
    status: {
      idle: "Not connected",
      connecting: "Connecting…",
      connected: "Connected, counting",
      reconnecting: (s, n) => `Reconnecting in ${s} s (attempt ${n})`,
      paused: "Paused",
      stopped: "Stopped",
    },
    kind: {
      stopped: "you disconnected",
      page_hidden: "paused while the page is hidden",
      page_unloaded: "the page was closed",
      closed: "closed by the server",
      server_restarting: "server restarting",
      server_busy: "server busy (study records unavailable), trying again later",
      connection_lost: "connection lost",
      timed_out: "timed out (no heartbeat in time)",
      replaced: "replaced by another tab or device",
      unauthorized: "not authorised: check the token",
      forbidden: "forbidden: this token may not study this course",
      invalid_params: "invalid user id or course id",
      too_many_messages: "too many messages",
      too_many_sessions: "too many courses open at once: close one, trying again later",
      too_many_connections: "too many connections from this network, trying again later",
      message_too_big: "message too big",
      invalid_url: "invalid server address",
      blocked: "blocked by this page's security policy",
    },
  },
  zh: {
    title: "学习时长",
    subtitle: "学习时长 WebSocket 客户端演示",
    tabLive: "实时",
    tabReports: "报表",
    cumulative: "累计学习时长",
    lastClose: "上次断开：",
    server: "服务器地址",
    userId: "用户 ID",
    courseId: "课程 ID",
    token: "令牌",
    tokenHint: "服务器要求时才需填写",
    crossHost: "服务器地址是另一个站点，不是本页面所在的站点：",
    crossHostRisk: "你填写的令牌会发送到那里。只有信任该站点时才继续。",
    crossHostConfirm: (host) => `将我的令牌发送到 ${host}`,
    crossHostRequired: "请勾选确认后才能把令牌发送到其他站点，或清空令牌。",
    blocked: (own, other, url) => ["本页面只能连接到加载它的服务器（", own, "）。要使用 ", other, "，请改为打开 ", url, "。"],
    pause: "页面隐藏时暂停计时",
    connect: "连接",
    disconnect: "断开",
    log: "日志",
    clearLog: "清空",
    logEmpty: "心跳和服务器回复会显示在这里。",
    refresh: "刷新",
    myCourses: "我的课程",
    leaderboard: "课程排行榜",
    course: "课程",
    time: "时长",
    sessions: "次数",
    lastStudied: "最近学习",
    rank: "名次",
    learner: "学员",
    footer: "客户端库：",
    switchTo: "English",
    session: (id, every) => `会话 ${id} · 每 ${every} 秒一次心跳`,
    reportsFor: (user, course) => `学员 ${user} · 课程 ${course}`,
    needIds: "请先在“实时”页填写用户 ID 和课程 ID。",
    loading: "正在加载…",
    noRows: "还没有学习记录。",
    reportsMissing: "此服务器暂未提供报表。",
    reportsDenied: "无权查看这些报表，请检查令牌。",
    reportsFailed: (why) => `报表加载失败（${why}）。`,
    status: {
      idle: "未连接",
      connecting: "正在连接…",
      connected: "已连接，正在计时",
      reconnecting: (s, n) => `${s} 秒后重新连接（第 ${n} 次）`,
      paused: "已暂停",
      stopped: "已停止",
    },
    kind: {
      stopped: "你已断开连接",
      page_hidden: "页面隐藏，已暂停",
      page_unloaded: "页面已关闭",
      closed: "服务器关闭了连接",
      server_restarting: "服务器正在重启",
      server_busy: "服务器繁忙（学习记录暂不可用），稍后重试",
      connection_lost: "连接中断",
      timed_out: "心跳超时",
      replaced: "已被其他标签页或设备取代",
      unauthorized: "未授权，请检查令牌",
      forbidden: "禁止访问：此令牌无权学习该课程",
      invalid_params: "用户 ID 或课程 ID 无效",
      too_many_messages: "消息过多",
      too_many_sessions: "同时打开的课程过多：请关闭一个，稍后自动重试",
      too_many_connections: "此网络的连接过多，稍后自动重试",
      message_too_big: "消息过大",
      invalid_url: "服务器地址无效",
      blocked: "被本页面的安全策略阻止",
    },
  },
};

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const MAX_LOG = 200;

let lang = pickLanguage();
let client = null;

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
  document.title = `${text.title} · study-time`;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = text[el.dataset.i18n];
  for (const el of document.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = text[el.dataset.i18nPlaceholder];
  }
  $("lang").textContent = text.switchTo;
  renderCrossHost();
  renderStatus();
  renderLogEmpty();
  if (!$("view-reports").hidden) loadReports();
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
// blocked URL carries the query, token included. Copies of the page served
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
  if (!$("view-reports").hidden) loadReports(); // says "blocked" instead of "could not load"
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
    ...(maxRetryDelay ? { maxRetryDelay, initialRetryDelay: Math.min(1000, maxRetryDelay) } : {}),
    onStatus: renderStatus,
    onStudyTime: renderTime,
    onTick: renderTime,
    onLog: addLog,
  });
  window.studyTimeClient = client; // for the console (and the browser tests)
  client.start();
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
  $("dot").dataset.status = status;
  const active = status !== Status.IDLE && status !== Status.STOPPED;
  $("disconnect").disabled = !active;
  if (client && client.lastClose) showReason(client.lastClose);
  else $("reason").hidden = true;
  $("session").textContent =
    client && status === Status.CONNECTED && client.sessionId
      ? text.session(client.sessionId.slice(0, 8), client.heartbeatInterval)
      : "";
  renderTime();
}

function showReason(close) {
  const text = t();
  $("reason").hidden = false;
  $("reason-text").textContent = text.kind[close.kind] || close.kind;
  $("reason-text").dataset.kind = close.kind;
  const parts = [];
  if (close.code) parts.push(`${close.code}`);
  if (close.error && close.error.message) parts.push(close.error.message);
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
  for (const [cls, value] of [["at", clock(entry.time)], ["dir", arrow], ["msg", entry.text]]) {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = value;
    item.append(span);
  }
  if (entry.message) item.dataset.type = entry.message.type;
  list.prepend(item); // newest first
  while (list.children.length > MAX_LOG) list.lastElementChild.remove();
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

function showTab(name) {
  for (const tab of ["live", "reports"]) {
    $(`tab-${tab}`).setAttribute("aria-selected", String(tab === name));
    $(`view-${tab}`).hidden = tab !== name;
  }
  if (name === "reports") loadReports();
}

$("tab-live").addEventListener("click", () => showTab("live"));
$("tab-reports").addEventListener("click", () => showTab("reports"));
$("refresh").addEventListener("click", () => loadReports());

// The reports view (docs/reports.md): the learner's courses and the course leaderboard.

let reportsRequest = 0;

async function loadReports() {
  const text = t();
  const user = $("userId").value.trim();
  const course = $("courseId").value.trim();
  const state = $("reports-state");
  fillTable("courses", []);
  fillTable("leaderboard", []);
  if (!user || !course) {
    $("reports-for").textContent = "";
    setReportsState("need_ids", text.needIds);
    return;
  }
  $("reports-for").textContent = text.reportsFor(user, course);
  setReportsState("loading", text.loading);
  const request = ++reportsRequest;
  let base;
  try {
    base = httpBase($("server").value);
  } catch {
    setReportsState("error", text.kind.invalid_url);
    return;
  }
  if (!tokenMayGo()) return setReportsState("confirm", text.crossHostRequired);
  const host = otherHost($("server").value);
  if (blockedHosts.has(host)) return setReportsState("blocked", blockedWords(host));
  const headers = { Accept: "application/json" };
  if ($("token").value) headers.Authorization = `Bearer ${$("token").value}`;
  const get = (path) => fetch(base + path, { headers, cache: "no-store" });
  try {
    const [courses, board] = await Promise.all([
      get(`/api/reports/learners/${encodeURIComponent(user)}/courses`),
      get(`/api/reports/courses/${encodeURIComponent(course)}/learners?limit=10`),
    ]);
    if (request !== reportsRequest) return; // a newer request is on its way
    const statuses = [courses.status, board.status];
    if (statuses.includes(404)) return setReportsState("missing", text.reportsMissing);
    if (statuses.includes(401) || statuses.includes(403)) return setReportsState("denied", text.reportsDenied);
    const failed = [courses, board].find((r) => !r.ok);
    if (failed) return setReportsState("error", text.reportsFailed(`HTTP ${failed.status}`));
    const [mine, top] = await Promise.all([courses.json(), board.json()]);
    if (request !== reportsRequest) return;
    state.hidden = true;
    state.dataset.state = "ok";
    $("reports-grid").hidden = false;
    fillTable(
      "courses",
      (mine.courses || []).map((c) => ({
        me: c.courseId === course,
        cells: [c.courseId, formatDuration(c.seconds), c.sessions, formatWhen(c.lastStudiedAt)],
      })),
    );
    fillTable(
      "leaderboard",
      (top.learners || []).map((l) => ({
        me: l.userId === user,
        cells: [l.rank, l.userId, formatDuration(l.seconds), l.sessions],
      })),
    );
  } catch (error) {
    if (request === reportsRequest) setReportsState("error", text.reportsFailed(error.message || "network"));
  }
}

function setReportsState(name, words) {
  const state = $("reports-state");
  state.dataset.state = name;
  state.replaceChildren(...[words].flat());
  state.hidden = false;
  // Empty tables under "not available" or "not authorised" only add noise.
  $("reports-grid").hidden = name !== "loading";
}

function formatWhen(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime())
    ? iso
    : date.toLocaleString(lang === "zh" ? "zh-CN" : "en-GB", { dateStyle: "medium", timeStyle: "short" });
}

function fillTable(id, rows) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren();
  const columns = $(id).querySelectorAll("thead th");
  if (rows.length === 0) {
    const tr = body.insertRow();
    const td = tr.insertCell();
    td.colSpan = columns.length;
    td.className = "empty";
    td.textContent = $("reports-state").dataset.state === "ok" ? t().noRows : "–";
    return;
  }
  for (const row of rows) {
    const tr = body.insertRow();
    if (row.me) tr.className = "me";
    row.cells.forEach((value, i) => {
      const td = tr.insertCell();
      td.textContent = String(value ?? "");
      if (columns[i].classList.contains("num")) td.className = "num";
    });
  }
}

// Start-up: prefill from the query string.

$("server").value = params.get("server") || location.host;
$("userId").value = params.get("userId") || "";
$("courseId").value = params.get("courseId") || "";
// No token from the query string: credentials do not belong in URLs (history, logs).
if (params.get("pause") === "0") $("pause").checked = false;
applyLanguage(); // also shows the warning when ?server= names another host
if (params.get("autoconnect") === "1" && $("userId").value && $("courseId").value) connect();
