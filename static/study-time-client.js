// study-time-client.js: the browser side of the study-time WebSocket protocol.
//
// A dependency-free ES module (no build step). A course page imports it,
// creates one StudyTimeClient per learner and course, and calls start().
// See docs/client.md for the API and a copy-paste example; docs/protocol.md
// for the protocol itself.

/** Close codes the server sends, by name. */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001, // server shutting down or restarting
  ABNORMAL: 1006, // no close frame: the network or the server went away
  MESSAGE_TOO_BIG: 1009,
  TRY_AGAIN_LATER: 1013, // the server's store is unavailable
  BAD_REQUEST: 4400, // missing or invalid userId / courseId
  UNAUTHORIZED: 4401,
  FORBIDDEN: 4403,
  HEARTBEAT_TIMEOUT: 4408,
  REPLACED: 4409, // another tab or device opened the same user and course
  TOO_MANY_MESSAGES: 4429,
  TOO_MANY_SESSIONS: 4430, // the learner has too many courses open at once: retried later
  TOO_MANY_CONNECTIONS: 4431, // too many connections from this address: retried later
});

/**
 * A short, stable name for why a connection ended (`close.kind`), for pages
 * to turn into words. Codes not listed are "connection_lost".
 */
const KIND_BY_CODE = new Map([
  [CloseCode.NORMAL, "closed"],
  [CloseCode.GOING_AWAY, "server_restarting"],
  [CloseCode.MESSAGE_TOO_BIG, "message_too_big"],
  [CloseCode.TRY_AGAIN_LATER, "server_busy"],
  [CloseCode.BAD_REQUEST, "invalid_params"],
  [CloseCode.UNAUTHORIZED, "unauthorized"],
  [CloseCode.FORBIDDEN, "forbidden"],
  [CloseCode.HEARTBEAT_TIMEOUT, "timed_out"],
  [CloseCode.REPLACED, "replaced"],
  [CloseCode.TOO_MANY_MESSAGES, "too_many_messages"],
  [CloseCode.TOO_MANY_SESSIONS, "too_many_sessions"],
  [CloseCode.TOO_MANY_CONNECTIONS, "too_many_connections"],
]);

// Closes after which trying again cannot help: the credential, the ids or the
// client itself are wrong, or another tab took over (retrying would take it
// back, and the two tabs would evict each other forever). Everything else --
// network failures, 1001 restarts, 1013 "try later", 4408 timeouts after a
// sleeping laptop, 4430/4431 caps that free up as other sessions close -- is
// retried with backoff.
const FINAL_CODES = new Set([
  CloseCode.MESSAGE_TOO_BIG,
  CloseCode.BAD_REQUEST,
  CloseCode.UNAUTHORIZED,
  CloseCode.FORBIDDEN,
  CloseCode.REPLACED,
  CloseCode.TOO_MANY_MESSAGES,
]);

/** The states a client is in (`client.status`). */
export const Status = Object.freeze({
  IDLE: "idle", // not started, or stopped by stop()
  CONNECTING: "connecting",
  CONNECTED: "connected", // counting
  RECONNECTING: "reconnecting", // waiting for the next attempt (see `retry`)
  PAUSED: "paused", // closed while the page is hidden or nobody is active (see `pauseReason`); resumes by itself
  STOPPED: "stopped", // refused for good, by the server or the page's policy (see `lastClose`)
});

/** Milliseconds without input after which a client pauses, by default (docs/client.md, "Idle pauses"). */
export const DEFAULT_IDLE_TIMEOUT = 300000;

const DEFAULTS = Object.freeze({
  url: null,
  token: null,
  pauseWhenHidden: true,
  // ms without input (pointer, keys, wheel, scroll, touch) and without a
  // playing <video>/<audio> after which the client pauses; 0 never pauses.
  // Five minutes: see docs/client.md ("Idle pauses").
  idleTimeout: DEFAULT_IDLE_TIMEOUT,
  closeOnPageHide: true,
  initialRetryDelay: 1000, // ms before the first reconnect
  maxRetryDelay: 30000, // ms, the ceiling of the exponential backoff
  connectTimeout: 10000, // ms for the socket to open and the server to say "connected"
  defaultHeartbeatInterval: 30, // s, if the server does not announce one
  minHeartbeatInterval: 0.1, // s, a floor whatever the server announces
  now: () => performance.now(),
  WebSocket: globalThis.WebSocket,
});

/** The endpoint on the page's own host: ws(s)://HOST/api/study-time. */
export function defaultUrl(loc = globalThis.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/api/study-time`;
}

// What a WebSocket subprotocol may contain (RFC 6455: an HTTP token). JWTs
// (base64url) and the server's API tokens fit; a browser refuses anything else.
const SUBPROTOCOL_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * The subprotocols that carry `token`: `bearer.<token>` next to
 * `study-time.v1`, which the server selects (a browser fails a connection
 * whose server selects none). Unlike a URL, the Sec-WebSocket-Protocol header
 * is not written to proxies' access logs, browser history or Referer headers.
 * Null without a token, or for one a subprotocol cannot carry.
 */
export function credentialProtocols(token) {
  if (!token || !SUBPROTOCOL_TOKEN.test(token)) return null;
  return ["study-time.v1", `bearer.${token}`];
}

/** Seconds as HH:MM:SS (hours grow past 99 rather than wrapping). */
export function formatDuration(totalSeconds) {
  const s = Math.max(0, Math.floor(totalSeconds || 0));
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(Math.floor(s / 3600))}:${pad(Math.floor((s % 3600) / 60))}:${pad(s % 60)}`;
}

/**
 * One learner studying one course. Emits DOM-style events (it is an
 * EventTarget); every event's `detail` is also passed to the matching
 * `on...` callback option:
 *
 * - `status`    (onStatus)    {status, previous, close, retry}
 * - `studytime` (onStudyTime) {studyTime, displayTime, source}
 * - `tick`      (onTick)      {displayTime} once a second while counting
 * - `log`       (onLog)       {time, direction: "in"|"out"|"info", text, message, event}
 *   (`text` is English; `event` {name, ...values} lets a page word the
 *   client's own lines in its language, `message` the server's)
 */
export class StudyTimeClient extends EventTarget {
  constructor(options) {
    super();
    const o = { ...DEFAULTS, ...options };
    for (const name of ["userId", "courseId"]) {
      if (typeof o[name] !== "string" || o[name] === "") {
        throw new TypeError(`StudyTimeClient: ${name} is required`);
      }
    }
    if (typeof o.WebSocket !== "function") {
      throw new TypeError("StudyTimeClient: this browser has no WebSocket");
    }
    this.options = o;
    this.userId = o.userId;
    this.courseId = o.courseId;
    this.url = o.url || defaultUrl();

    this.status = Status.IDLE;
    /** Why the last connection ended: {code, reason, kind, error, willReconnect, byClient}. */
    this.lastClose = null;
    /** While reconnecting: {attempt, delay, at}. */
    this.retry = null;
    /** The last total the server sent, in whole seconds (null before the first). */
    this.studyTime = null;
    /** The value to show: the server total plus the seconds since, never decreasing. */
    this.displayTime = 0;
    this.sessionId = null;
    this.heartbeatInterval = null;
    this.heartbeatTimeout = null;
    /** While `paused`: "hidden" (the page is hidden) or "idle" (no input for `idleTimeout`); else null. */
    this.pauseReason = null;

    this._ws = null;
    this._attempt = 0;
    this._timers = {};
    this._serverAt = 0; // this.options.now() when studyTime last arrived
    this._lastSentAt = -Infinity;
    this._lastHeardAt = 0;
    this._closingBecause = null; // set when we close the socket ourselves
    this._listening = false;
    this._onVisibility = () => this._visibilityChanged();
    this._onPageHide = () => this._pageHidden();
    this._onPageShow = (event) => this._pageShown(event);
    this._onOnline = () => this._networkBack();
    this._onViolation = (event) => this._blockedByPolicy(event);
    this._onActivity = () => this._activity();
    this._lastInputAt = 0; // this.options.now() of the last input (or start, or a playing medium)
  }

  /** Start counting: connect now (or wait for visibility when paused). */
  start() {
    this._listen(true);
    if (this._connectable()) return;
    this._attempt = 0;
    this._lastInputAt = this.options.now();
    this._armIdle();
    if (this.options.pauseWhenHidden && this._hidden()) {
      this.pauseReason = "hidden";
      this._setStatus(Status.PAUSED);
      return;
    }
    this.pauseReason = null;
    this._connect();
  }

  /** Stop counting: close cleanly (the server credits the time since the last heartbeat). */
  stop() {
    this._listen(false);
    this._clearTimer("retry");
    this._clearTimer("idle");
    this.retry = null;
    this.pauseReason = null;
    this._closeSocket("stopped");
    this._setStatus(Status.IDLE);
  }

  // Connection.

  _connectable() {
    return this.status === Status.CONNECTING || this.status === Status.CONNECTED;
  }

  _connect() {
    this._clearTimer("retry");
    this.retry = null;
    const params = new URLSearchParams({ userId: this.userId, courseId: this.courseId });
    const protocols = credentialProtocols(this.options.token);
    // A credential a subprotocol cannot carry goes in the query (docs/auth.md).
    if (this.options.token && !protocols) params.set("token", this.options.token);
    const url = `${this.url}${this.url.includes("?") ? "&" : "?"}${params}`;
    this._setStatus(Status.CONNECTING);
    this._log("info", `connecting to ${this.url}`, null, { name: "connecting", url: this.url });
    let ws;
    try {
      ws = protocols ? new this.options.WebSocket(url, protocols) : new this.options.WebSocket(url);
    } catch (error) {
      // A malformed URL: nothing to retry.
      this._finish({ code: null, reason: String(error.message || error), kind: "invalid_url" }, false);
      return;
    }
    this._ws = ws;
    this._opened = false; // until the server says "connected"
    this._closingBecause = null;
    this._pendingError = null;
    this._setTimer("connect", this.options.connectTimeout, () => {
      this._log("info", "no answer from the server in time", null, { name: "noAnswer" });
      this._closeSocket("connect_timeout");
    });
    ws.onmessage = (event) => this._received(ws, event.data);
    ws.onclose = (event) => this._closed(ws, event);
    // onerror is always followed by onclose, which decides what to do.
  }

  _received(ws, data) {
    if (ws !== this._ws) return;
    this._lastHeardAt = this.options.now();
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      this._log("in", String(data).slice(0, 200), null);
      return;
    }
    this._log("in", describe(message), message);
    switch (message.type) {
      case "connected":
        this._clearTimer("connect");
        this._opened = true;
        this.sessionId = message.sessionId ?? null;
        this.heartbeatInterval = positive(message.heartbeatInterval) ?? this.options.defaultHeartbeatInterval;
        this.heartbeatTimeout = positive(message.heartbeatTimeout) ?? this.heartbeatInterval * 2;
        this._setStudyTime(message.studyTime, "connected");
        this._setStatus(Status.CONNECTED);
        this._lastSentAt = this.options.now();
        this._scheduleHeartbeat();
        this._setInterval("tick", 1000, () => this._tick());
        break;
      case "heartbeat_response":
        this._setStudyTime(message.studyTime, "heartbeat");
        // The connection works: later failures start the backoff afresh.
        if (message.status === "success") this._attempt = 0;
        break;
      case "error":
        // The server explains itself just before it closes; keep it for the close.
        this._pendingError = { code: message.code ?? null, message: message.message ?? "" };
        break;
      default:
        break;
    }
  }

  _closed(ws, event) {
    if (ws !== this._ws) return;
    this._ws = null;
    this._clearTimer("connect");
    this._stopCounting();
    const byClient = this._closingBecause;
    const code = event.code;
    const close = {
      code,
      reason: event.reason || "",
      kind: byClient || KIND_BY_CODE.get(code) || "connection_lost",
      error: this._pendingError,
      byClient: Boolean(byClient),
    };
    this._log("info", `closed ${event.code}${event.reason ? ` (${event.reason})` : ""}`, null, {
      name: "closed",
      code: event.code,
      reason: event.reason || "",
      kind: close.kind,
    });
    if (byClient === "stopped" || byClient === "page_hidden" || byClient === "page_unloaded" || byClient === "idle") {
      // We closed on purpose; stop() / _pause() set the status.
      this.lastClose = { ...close, willReconnect: false };
      this._emitStatus();
      return;
    }
    const retry = !FINAL_CODES.has(code);
    if (retry && !this._opened && close.kind === "connection_lost" && this.lastClose?.willReconnect) {
      // A failed attempt while reconnecting: the reason the connection went
      // (e.g. "server restarting") still says more than "connection lost".
      this._backoff();
      return;
    }
    this._finish(close, retry);
  }

  _finish(close, retry) {
    this.lastClose = { ...close, willReconnect: retry };
    if (!retry) {
      this._listen(false);
      this._setStatus(Status.STOPPED);
      return;
    }
    this._backoff();
  }

  _backoff() {
    // Jittered exponential backoff: the delay doubles with each failure up to
    // the ceiling, and each client waits a random 50-100% of it, so a
    // restarted server is not hit by every learner in the same instant.
    const o = this.options;
    const ceiling = Math.min(o.maxRetryDelay, o.initialRetryDelay * 2 ** this._attempt);
    const delay = Math.round(ceiling * (0.5 + Math.random() * 0.5));
    this._attempt += 1;
    this.retry = { attempt: this._attempt, delay, at: Date.now() + delay };
    this._log("info", `reconnecting in ${(delay / 1000).toFixed(1)}s (attempt ${this._attempt})`, null, {
      name: "reconnecting",
      delay,
      attempt: this._attempt,
    });
    this._setTimer("retry", delay, () => this._connect());
    this._setStatus(Status.RECONNECTING);
  }

  _closeSocket(why) {
    this._stopCounting();
    this._clearTimer("connect");
    if (why !== "connect_timeout") {
      // We know why at once; the close event only confirms it.
      this.lastClose = { code: CloseCode.NORMAL, reason: why, kind: why, error: null, byClient: true, willReconnect: false };
    }
    const ws = this._ws;
    if (!ws) return;
    this._closingBecause = why;
    if (why === "connect_timeout") {
      // Treat it like a network failure, without waiting for the socket.
      ws.onclose = null;
      ws.onmessage = null;
      this._ws = null;
      try {
        ws.close();
      } catch {
        // already closed
      }
      this._finish({ code: null, reason: "", kind: "connection_lost", error: null, byClient: true }, true);
      return;
    }
    this._log("out", `close 1000 (${why})`, null, { name: "closing", why });
    // A close frame (1000) ends the session cleanly, so the server credits
    // the time since the last heartbeat.
    ws.close(CloseCode.NORMAL, why);
  }

  // Heartbeats and the display value.

  _scheduleHeartbeat() {
    const interval = Math.max(this.heartbeatInterval, this.options.minHeartbeatInterval) * 1000;
    // Never sooner than one interval after the previous heartbeat (or the
    // opening), however timers were delayed or restarted.
    const wait = Math.max(0, this._lastSentAt + interval - this.options.now());
    this._setTimer("heartbeat", wait, () => this._heartbeat());
  }

  _heartbeat() {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1 || this.status !== Status.CONNECTED) return;
    const now = this.options.now();
    // No word from the server for a whole timeout: the connection is dead
    // without having closed (a half-open TCP connection). Start again.
    if (now - this._lastHeardAt > (this.heartbeatInterval + this.heartbeatTimeout) * 1000) {
      this._log("info", "the server stopped answering", null, { name: "stoppedAnswering" });
      ws.onclose = null;
      ws.onmessage = null;
      this._ws = null;
      this._stopCounting();
      ws.close(CloseCode.NORMAL, "no answer");
      this._finish({ code: null, reason: "", kind: "connection_lost", error: null, byClient: true }, true);
      return;
    }
    const message = { type: "heartbeat", timestamp: new Date().toISOString() };
    ws.send(JSON.stringify(message));
    this._lastSentAt = now;
    this._log("out", "heartbeat", message);
    this._scheduleHeartbeat();
  }

  _setStudyTime(value, source) {
    if (typeof value !== "number" || !Number.isFinite(value)) return;
    this.studyTime = value;
    this._serverAt = this.options.now();
    this._updateDisplay();
    this._emit("studytime", { studyTime: value, displayTime: this.displayTime, source });
  }

  _estimate() {
    if (this.studyTime === null) return 0;
    let elapsed = 0;
    if (this.status === Status.CONNECTED) {
      // The server credits at most one timeout per gap, so never run further ahead.
      const cap = (this.heartbeatTimeout ?? this.options.defaultHeartbeatInterval * 2) * 1000;
      elapsed = Math.min(this.options.now() - this._serverAt, cap);
    }
    return Math.floor(this.studyTime + elapsed / 1000);
  }

  _updateDisplay() {
    // Corrected by each reply, but never backwards: if the display ran ahead
    // of the server, it holds still until the server's total catches up.
    this.displayTime = Math.max(this.displayTime, this._estimate());
  }

  _tick() {
    this._updateDisplay();
    this._emit("tick", { displayTime: this.displayTime });
  }

  _stopCounting() {
    if (this.status === Status.CONNECTED) this._updateDisplay();
    this._clearTimer("heartbeat");
    this._clearTimer("tick");
  }

  // Page lifecycle.

  _listen(on) {
    if (on === this._listening || typeof document === "undefined") return;
    this._listening = on;
    const method = on ? "addEventListener" : "removeEventListener";
    document[method]("visibilitychange", this._onVisibility);
    globalThis[method]("pagehide", this._onPageHide);
    globalThis[method]("pageshow", this._onPageShow);
    globalThis[method]("online", this._onOnline);
    document[method]("securitypolicyviolation", this._onViolation);
    // Captured on the document: scroll and play do not bubble.
    for (const type of ACTIVITY_EVENTS) document[method](type, this._onActivity, { capture: true, passive: true });
  }

  _hidden() {
    return typeof document !== "undefined" && document.visibilityState === "hidden";
  }

  _visibilityChanged() {
    if (!this._hidden()) {
      // Coming back to the page is the learner's doing: it counts as input.
      this._activity();
      return;
    }
    if (this.options.pauseWhenHidden) this._pause("hidden", "page_hidden");
  }

  /** Close cleanly (the server credits up to now) and wait, `paused`, for the page or the learner. */
  _pause(reason, why) {
    if (this.status === Status.STOPPED || this.status === Status.IDLE) return;
    if (this.status === Status.PAUSED) {
      // Already closed (idle, then hidden): only the reason changes.
      this.pauseReason = reason;
      this._emitStatus();
      return;
    }
    this._clearTimer("retry");
    this.retry = null;
    this._closeSocket(why);
    this.pauseReason = reason;
    this._setStatus(Status.PAUSED);
  }

  // Idle detection. Input events only record the time; one timer checks,
  // when the idle timeout could be over, whether it is.

  _armIdle() {
    const timeout = this.options.idleTimeout;
    if (!(timeout > 0)) return;
    const wait = Math.max(0, this._lastInputAt + timeout - this.options.now());
    this._setTimer("idle", wait, () => this._idleCheck());
  }

  _idleCheck() {
    if (this.status === Status.PAUSED || this.status === Status.STOPPED || this.status === Status.IDLE) return;
    if (this._mediaPlaying()) this._lastInputAt = this.options.now();
    if (this.options.now() - this._lastInputAt < this.options.idleTimeout) {
      this._armIdle();
      return;
    }
    const minutes = Math.round(this.options.idleTimeout / 6000) / 10;
    this._log("info", `no activity for ${minutes} min: paused`, null, { name: "idle", minutes });
    this._pause("idle", "idle");
  }

  _mediaPlaying() {
    if (typeof document === "undefined") return false;
    for (const media of document.querySelectorAll("video, audio")) {
      if (!media.paused && !media.ended && media.readyState > 2) return true;
    }
    return false;
  }

  _activity() {
    this._lastInputAt = this.options.now();
    if (this.status !== Status.PAUSED || (this.pauseReason !== "idle" && this.pauseReason !== "hidden")) return;
    if (this.options.pauseWhenHidden && this._hidden()) return;
    this._log("info", "active again: resuming", null, { name: "active" });
    this.pauseReason = null;
    this._attempt = 0;
    this._armIdle();
    this._connect();
  }

  _pageHidden() {
    // The page is being unloaded (or put in the back/forward cache): close
    // cleanly now so the server credits the time since the last heartbeat.
    if (!this.options.closeOnPageHide || !this._ws) return;
    this._clearTimer("retry");
    this._closeSocket("page_unloaded");
    this._setStatus(Status.PAUSED);
  }

  _pageShown(event) {
    // Back from the back/forward cache.
    if (event.persisted && this.status === Status.PAUSED && !(this.options.pauseWhenHidden && this._hidden())) {
      this._attempt = 0;
      this._connect();
    }
  }

  // The page's Content-Security-Policy. A page whose connect-src does not list
  // the server (the demo page allows only the server it came from) cannot
  // reach it whatever the client does: the browser refuses the socket, which
  // ends like a network failure (an error, then 1006 or nothing at all), so
  // without this the client would retry forever. The browser says so with a
  // securitypolicyviolation event on the document, naming the blocked URL.

  _blockedByPolicy(event) {
    const directive = event.effectiveDirective || event.violatedDirective || "";
    if (!directive.startsWith("connect-src") || !sameHost(event.blockedURI, this.url)) return;
    if (this.status === Status.STOPPED || this.status === Status.IDLE) return;
    const ws = this._ws;
    if (ws) {
      // Its error and close events (if any) are the block's; nothing to wait for.
      ws.onclose = null;
      ws.onmessage = null;
      this._ws = null;
    }
    this._clearTimer("connect");
    this._clearTimer("retry");
    this.retry = null;
    this._stopCounting();
    // Only the host is logged: the blocked URL carries the query (a token, if it had to go there).
    const host = new URL(this.url).host;
    this._log("info", `blocked by this page's Content-Security-Policy (connect-src): ${host}`, null, {
      name: "blocked",
      host,
    });
    this._finish({ code: null, reason: "connect-src", kind: "blocked", error: null, byClient: true }, false);
  }

  _networkBack() {
    if (this.status === Status.RECONNECTING) {
      this._log("info", "network is back", null, { name: "networkBack" });
      this._connect();
    }
  }

  // Plumbing.

  _setStatus(status) {
    if (status === this.status) return;
    this._previous = this.status;
    this.status = status;
    this._emitStatus();
  }

  _emitStatus() {
    this._emit("status", {
      status: this.status,
      previous: this._previous ?? null,
      pauseReason: this.pauseReason,
      close: this.lastClose,
      retry: this.retry,
    });
  }

  _emit(type, detail) {
    const callback = this.options[`on${type === "studytime" ? "StudyTime" : type[0].toUpperCase() + type.slice(1)}`];
    if (typeof callback === "function") {
      try {
        callback(detail);
      } catch (error) {
        console.error(error);
      }
    }
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _log(direction, text, message = null, event = null) {
    this._emit("log", { time: new Date(), direction, text, message, event });
  }

  _setTimer(name, ms, fn) {
    this._clearTimer(name);
    this._timers[name] = { id: setTimeout(fn, ms), interval: false };
  }

  _setInterval(name, ms, fn) {
    this._clearTimer(name);
    this._timers[name] = { id: setInterval(fn, ms), interval: true };
  }

  _clearTimer(name) {
    const timer = this._timers[name];
    if (!timer) return;
    (timer.interval ? clearInterval : clearTimeout)(timer.id);
    delete this._timers[name];
  }
}

/** What counts as the learner being there (plus a <video>/<audio> playing, checked when the timeout is up). */
const ACTIVITY_EVENTS = ["pointerdown", "pointermove", "keydown", "wheel", "scroll", "touchstart", "play"];

/** Whether two URLs (ws:, wss:, http: or https:) name the same host and port. */
function sameHost(a, b) {
  try {
    return new URL(a).host === new URL(b).host;
  } catch {
    return false; // e.g. "inline" or "eval": not a connection
  }
}

function positive(value) {
  return typeof value === "number" && Number.isFinite(value) && value > 0 ? value : null;
}

function describe(message) {
  switch (message.type) {
    case "connected":
      return `connected, total ${message.studyTime}s, heartbeat every ${message.heartbeatInterval}s`;
    case "heartbeat_response":
      return message.status === "success"
        ? `heartbeat ok, total ${message.studyTime}s`
        : `heartbeat refused (${message.code}): ${message.message}`;
    case "error":
      return `error ${message.code}: ${message.message}`;
    default:
      return JSON.stringify(message).slice(0, 200);
  }
}
