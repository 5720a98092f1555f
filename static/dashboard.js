// The reports view: dashboards for a learner, a teacher and an admin, drawn
// from the report endpoints only (docs/reports.md). /api/reports/whoami says
// who the credential is and so which dashboards to show; each number on screen
// is a number of a report response (days without study are shown as 0).
//
// Charts are uPlot (static/vendor/, loaded as a classic script that defines
// window.uPlot). Each chart has a text alternative: a description
// (aria-describedby) and a table of the same numbers under "Show the numbers".
// For the browser tests every chart keeps the request it drew and its series
// in data-url / data-series, and every number cell its value in data-value.

import { TEXT, humanDuration, locale } from "./i18n.js";

const REFRESH_MS = 15_000;
const uPlot = window.uPlot;
const COLORS = { bar: "#2458d3", barFill: "rgba(36, 88, 211, 0.75)", pick: "#d98a00", grid: "#e6eaf0", text: "#5d6778" };

const $ = (id) => document.getElementById(id);

/** Days "YYYY-MM-DD" from `from` to `to` inclusive. */
export function daysBetween(from, to) {
  const out = [];
  const day = new Date(`${from}T00:00:00Z`);
  const last = new Date(`${to}T00:00:00Z`);
  while (day <= last && out.length < 400) {
    out.push(day.toISOString().slice(0, 10));
    day.setUTCDate(day.getUTCDate() + 1);
  }
  return out;
}

function addDays(date, n) {
  const day = new Date(`${date}T00:00:00Z`);
  day.setUTCDate(day.getUTCDate() + n);
  return day.toISOString().slice(0, 10);
}

/** Today's date in time zone `tz`. */
function today(tz) {
  return new Intl.DateTimeFormat("en-CA", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit" }).format(
    new Date(),
  );
}

/** One CSV cell: text that a spreadsheet would take for a formula gets a leading ' (as the server's CSV). */
export function csvCell(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  let text = String(value);
  if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

export function csvText(rows) {
  return rows.map((row) => row.map(csvCell).join(",")).join("\r\n") + "\r\n";
}

class ReportError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code || null;
    this.parameter = body?.error?.parameter || null;
  }
}

export class Dashboards {
  /**
   * @param {object} o root (the view element), lang, form() (server, token, userId, courseId),
   *   httpBase(typed server), reach() (null, or {state, words} when the server may not be asked)
   */
  constructor(o) {
    this.o = o;
    this.lang = o.lang;
    this.visible = false;
    this.who = null; // the whoami answer
    this.view = null; // "learner" or "course"
    this.tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    this.learnerCourse = ""; // the learner's course filter ("" = all)
    this.learnerDay = null; // the day whose sessions are listed
    this.course = null; // the course of the course view
    this.drill = null; // {userId, day}
    this.sort = { key: "seconds", dir: "desc" };
    this.learnerRows = [];
    this.charts = new Map(); // element id -> uPlot
    this.drawn = new Map(); // element id -> key of what it shows (skip redrawing the same)
    this.generation = 0;
    this.timer = null;
    this.asOf = null;
    this.fillZones();
    this.bind();
    this.setRange("7");
    document.addEventListener("visibilitychange", () => this.schedule());
    new ResizeObserver(() => this.resize()).observe(o.root);
  }

  t() {
    return TEXT[this.lang];
  }

  // Controls.

  fillZones() {
    const select = $("dash-tz");
    const zones = new Set(Intl.supportedValuesOf ? Intl.supportedValuesOf("timeZone") : []);
    zones.add(this.tz);
    zones.add("UTC");
    for (const zone of [...zones].sort()) select.add(new Option(zone, zone, false, zone === this.tz));
    select.value = this.tz;
  }

  bind() {
    $("dash-range").addEventListener("change", () => this.setRange($("dash-range").value));
    for (const id of ["dash-from", "dash-to"]) {
      $(id).addEventListener("change", () => {
        if ($("dash-from").value && $("dash-to").value) this.refresh();
      });
    }
    $("dash-tz").addEventListener("change", () => {
      this.tz = $("dash-tz").value;
      this.setRange($("dash-range").value);
    });
    $("refresh").addEventListener("click", () => this.refresh());
    for (const view of ["learner", "course"]) {
      $(`dash-view-${view}`).addEventListener("click", () => {
        this.view = view;
        this.refresh();
      });
    }
    $("learner-course").addEventListener("change", () => {
      this.learnerCourse = $("learner-course").value;
      this.learnerDay = null;
      this.refresh();
    });
    $("course-pick").addEventListener("change", () => {
      this.course = $("course-pick").value;
      this.drill = null;
      this.refresh();
    });
    $("drill-close").addEventListener("click", () => {
      const user = this.drill?.userId;
      this.drill = null;
      $("course-drill").hidden = true;
      document.querySelector(`#course-learners [data-focus="learner:${CSS.escape(user || "")}"]`)?.focus();
    });
    $("course-csv").addEventListener("click", () => this.downloadCsv());
    for (const button of $("course-learners").querySelectorAll("th button[data-sort]")) {
      button.addEventListener("click", () => {
        const key = button.dataset.sort;
        this.sort = { key, dir: this.sort.key === key && this.sort.dir === "desc" ? "asc" : "desc" };
        if (key === "userId" && this.sort.key !== key) this.sort.dir = "asc";
        this.renderLearnerTable();
      });
    }
  }

  /** The range picker: the last 7 or 30 days, this month, or two dates. */
  setRange(value) {
    const custom = value === "custom";
    $("dash-custom").hidden = !custom;
    const end = today(this.tz);
    if (!custom) {
      const start = value === "month" ? `${end.slice(0, 8)}01` : addDays(end, -(Number(value) - 1));
      $("dash-from").value = start;
      $("dash-to").value = end;
    }
    this.refresh();
  }

  range() {
    let from = $("dash-from").value;
    let to = $("dash-to").value;
    if (from > to) [from, to] = [to, from];
    return { from, to, tz: this.tz };
  }

  setLanguage(lang) {
    this.lang = lang;
    this.drawn.clear(); // every label is words
    this.refresh();
  }

  setVisible(visible) {
    this.visible = visible;
    if (visible) this.refresh();
    else this.schedule();
  }

  /** Refresh again in REFRESH_MS while the view is visible (and the page is). */
  schedule() {
    clearTimeout(this.timer);
    this.timer = null;
    if (!this.visible) return;
    if (document.visibilityState !== "visible") return;
    this.timer = setTimeout(() => this.refresh({ quiet: true }), REFRESH_MS);
  }

  // Requests.

  async get(path, query = {}) {
    const form = this.o.form();
    const url = new URL(this.o.httpBase(form.server) + path);
    for (const [name, value] of Object.entries(query)) {
      if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, value);
    }
    const headers = { Accept: "application/json" };
    if (form.token) headers.Authorization = `Bearer ${form.token}`;
    const response = await fetch(url, { headers, cache: "no-store" });
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) throw new ReportError(response.status, body);
    if (body && body.asOf) this.asOf = body.asOf;
    const shown = url.pathname + url.search;
    return { body, url: shown };
  }

  /** Load what the view shows and draw it; a newer refresh makes an older one's answers moot. */
  async refresh({ quiet = false } = {}) {
    clearTimeout(this.timer);
    if (!this.visible) return;
    const generation = ++this.generation;
    const current = () => generation === this.generation;
    this.o.root.dataset.busy = "1"; // until the newest refresh has drawn (the tests wait for it)
    const text = this.t();
    const blocked = this.o.reach();
    if (blocked) return this.setState(blocked.state, blocked.words);
    if (!quiet && !this.who) this.setState("loading", text.loading);
    try {
      const who = (await this.get("/api/reports/whoami")).body;
      if (!current()) return;
      this.who = who;
      const learner = this.learnerId();
      const canCourse = who.admin || who.teacher;
      // A learner sees their own study; a teacher or admin a course first, and
      // their own study (or, without sign-in, the Live tab's user's) on request.
      const views = [...(who.userId || who.admin ? ["learner"] : []), ...(canCourse ? ["course"] : [])];
      if (!views.includes(this.view)) this.view = canCourse ? "course" : "learner";
      this.renderHeader(views);
      if (this.view === "learner") {
        if (!learner) return this.setState("need_ids", text.needUser);
        await this.loadLearner(learner, current);
      } else {
        await this.loadCourse(current);
      }
      if (!current()) return;
      this.setState("ok");
    } catch (error) {
      if (current()) this.failed(error);
    } finally {
      if (current()) {
        this.o.root.dataset.busy = "0";
        this.schedule();
      }
    }
  }

  /** Whose study the learner dashboard shows: the credential's user, or (no sign-in) the Live tab's user id. */
  learnerId() {
    const who = this.who;
    if (who.userId) return who.userId;
    return who.admin ? this.o.form().userId || null : null;
  }

  failed(error) {
    const text = this.t();
    if (!(error instanceof ReportError)) {
      this.setState("error", text.reportsFailed(error.message || text.network));
      return;
    }
    if (error.status === 404 && !this.who) return this.setState("missing", text.reportsMissing);
    if (error.status === 401) return this.setState("denied", text.reportsUnauthorized);
    if (error.status === 403) return this.setState("forbidden", text.reportsForbidden);
    if (error.status === 503) return this.setState("unavailable", text.storeUnavailable);
    if (error.status === 400) return this.setState("error", text.invalidParameter(error.parameter || error.code));
    this.setState("error", text.reportsFailed(`HTTP ${error.status}`));
  }

  setState(name, words) {
    const state = $("reports-state");
    state.dataset.state = name;
    this.o.root.dataset.state = name;
    if (name === "ok") {
      state.hidden = true;
      state.replaceChildren();
    } else {
      state.replaceChildren(...[words].flat());
      state.hidden = false;
    }
    const hide = !["ok", "loading"].includes(name);
    $("dash-learner").hidden = hide || this.view !== "learner";
    $("dash-course").hidden = hide || this.view !== "course";
    this.renderAsOf();
  }

  renderHeader(views) {
    const text = this.t();
    const who = this.who;
    $("dash-who").textContent = who.admin
      ? text.whoAdmin(who.userId)
      : who.teacher
        ? text.whoTeacher(who.userId)
        : text.whoLearner(who.userId);
    $("dash-views").hidden = views.length < 2;
    for (const view of ["learner", "course"]) {
      $(`dash-view-${view}`).setAttribute("aria-pressed", String(this.view === view));
    }
    $("dash-learner").hidden = this.view !== "learner";
    $("dash-course").hidden = this.view !== "course";
  }

  renderAsOf() {
    const el = $("dash-asof");
    el.textContent = this.asOf ? this.t().asOf(this.clock(this.asOf)) : "";
    el.dataset.asof = this.asOf || "";
  }

  // Formatting, in the page's language and the chosen time zone.

  clock(iso) {
    return new Intl.DateTimeFormat(locale(this.lang), {
      timeZone: this.tz,
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
      hour12: false,
    }).format(new Date(iso));
  }

  when(iso) {
    if (!iso) return "";
    return new Intl.DateTimeFormat(locale(this.lang), {
      timeZone: this.tz,
      dateStyle: "medium",
      timeStyle: "short",
    }).format(new Date(iso));
  }

  /** A time on `day` as "14:02", one on another day with its date too (a session across midnight). */
  whenOn(iso, day) {
    if (!iso) return "";
    const date = new Date(iso);
    const sameDay = new Intl.DateTimeFormat("en-CA", { timeZone: this.tz }).format(date) === day;
    return new Intl.DateTimeFormat(locale(this.lang), {
      timeZone: this.tz,
      ...(sameDay ? {} : { month: "short", day: "numeric" }),
      hour: "2-digit",
      minute: "2-digit",
      hour12: false,
    }).format(date);
  }

  /** A calendar day "YYYY-MM-DD" for people ("Tue 3 Oct" / "10月3日周二"). */
  day(date, style = "long") {
    const options =
      style === "short" ? { month: "numeric", day: "numeric" } : { weekday: "short", month: "short", day: "numeric" };
    return new Intl.DateTimeFormat(locale(this.lang), { ...options, timeZone: "UTC" }).format(
      new Date(`${date}T00:00:00Z`),
    );
  }

  duration(seconds) {
    return humanDuration(this.lang, seconds);
  }

  // The learner dashboard.

  async loadLearner(userId, current) {
    const range = this.range();
    const [courses, daily] = await Promise.all([
      this.get(`/api/reports/learners/${encodeURIComponent(userId)}/courses`, range),
      this.get("/api/reports/daily", { userId, courseId: this.learnerCourse, ...range }),
    ]);
    if (!current()) return;
    const list = courses.body.courses || [];
    this.fillSelect(
      $("learner-course"),
      [["", this.t().allCourses], ...list.map((c) => [c.courseId, c.courseId])],
      this.learnerCourse,
    );
    if (this.learnerCourse && !list.some((c) => c.courseId === this.learnerCourse)) {
      $("learner-course").add(new Option(this.learnerCourse, this.learnerCourse, false, true));
    }
    this.renderCourses(courses, list);
    this.renderDaily("learner", daily, range, (day) => {
      this.learnerDay = day;
      this.refresh({ quiet: true });
    });
    this.markPicked("learner", this.learnerDay);
    if (this.learnerDay) {
      const sessions = await this.get("/api/reports/sessions", {
        userId,
        courseId: this.learnerCourse,
        from: this.learnerDay,
        to: this.learnerDay,
        tz: this.tz,
        limit: 1000,
      });
      if (!current()) return;
      this.renderSessions("learner", sessions, this.learnerDay);
    } else {
      this.renderSessions("learner", null, null);
    }
  }

  renderCourses(response, list) {
    const text = this.t();
    const table = $("learner-courses");
    table.dataset.url = response.url;
    this.fillRows(
      table,
      list.map((c) => [
        { text: c.courseId },
        { text: this.duration(c.seconds), value: c.seconds, num: true },
        { text: String(c.sessions), value: c.sessions, num: true },
        { text: c.open ? text.openAsOf(this.clock(this.asOf)) : this.when(c.lastStudiedAt), value: c.lastStudiedAt },
      ]),
      text.noRows,
    );
  }

  // The course dashboard (teachers and admins).

  async loadCourse(current) {
    const text = this.t();
    const range = this.range();
    const form = this.o.form();
    let ids;
    try {
      const courses = await this.get("/api/reports/courses", { ...range, limit: 1000 });
      ids = (courses.body.courses || []).map((c) => c.courseId);
      $("course-pick").dataset.url = courses.url;
    } catch (error) {
      if (!(error instanceof ReportError) || error.status !== 403) throw error;
      ids = this.who.courses || [];
    }
    if (!current()) return;
    for (const extra of [this.course, form.courseId, ...(this.who.courses || [])]) {
      if (extra && !ids.includes(extra)) ids.push(extra);
    }
    if (!this.course || !ids.includes(this.course)) {
      this.course = ids.includes(form.courseId) ? form.courseId : ids[0] || null;
    }
    this.fillSelect(
      $("course-pick"),
      ids.map((id) => [id, id]),
      this.course,
    );
    if (!this.course) {
      this.setState("empty", text.noCourses);
      return;
    }
    const course = this.course;
    const path = encodeURIComponent(course);
    const [daily, learners, board] = await Promise.all([
      this.get("/api/reports/daily", { courseId: course, ...range }),
      this.get(`/api/reports/courses/${path}/daily-learners`, { ...range, limit: 1000 }),
      this.get(`/api/reports/courses/${path}/learners`, { ...range, limit: 1000 }),
    ]);
    if (!current()) return;
    $("course-chart-title").textContent = text.courseDaily(course);
    $("course-learners-title").textContent = text.learnersOf(course);
    this.renderDaily("course", daily, range, null);
    const extra = new Map((board.body.learners || []).map((l) => [l.userId, l]));
    this.learnerRows = (learners.body.learners || []).map((l, i) => ({
      order: i,
      userId: l.userId,
      seconds: l.seconds,
      days: l.days,
      sessions: extra.get(l.userId)?.sessions ?? 0,
      lastStudiedAt: extra.get(l.userId)?.lastStudiedAt ?? null,
      open: extra.get(l.userId)?.open ?? false,
    }));
    this.learnerDates = learners.body.dates || [];
    $("course-learners").dataset.url = learners.url;
    $("course-learners").dataset.boardUrl = board.url;
    this.renderLearnerTable();
    if (this.drill) await this.loadDrill(course, current);
    else $("course-drill").hidden = true;
  }

  sortedLearners() {
    const { key, dir } = this.sort;
    const sign = dir === "asc" ? 1 : -1;
    return [...this.learnerRows].sort((a, b) => {
      const x = a[key] ?? "";
      const y = b[key] ?? "";
      const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
      return order * sign || a.order - b.order;
    });
  }

  renderLearnerTable() {
    const text = this.t();
    const table = $("course-learners");
    for (const th of table.querySelectorAll("th[data-col]")) {
      const button = th.querySelector("button");
      const active = button && button.dataset.sort === this.sort.key;
      if (button) {
        th.setAttribute("aria-sort", active ? (this.sort.dir === "asc" ? "ascending" : "descending") : "none");
        button.dataset.dir = active ? this.sort.dir : "";
      }
    }
    const rows = this.sortedLearners();
    this.shownLearners = rows;
    this.fillRows(
      table,
      rows.map((l) => [
        { text: l.userId, button: `learner:${l.userId}`, pick: () => this.pickLearner(l.userId) },
        { text: this.duration(l.seconds), value: l.seconds, num: true },
        { text: String(l.sessions), value: l.sessions, num: true },
        { text: l.open ? text.openAsOf(this.clock(this.asOf)) : this.when(l.lastStudiedAt), value: l.lastStudiedAt },
        { spark: l.days, value: l.days.join(" ") },
      ]),
      text.noRows,
    );
  }

  pickLearner(userId) {
    this.drill = { userId, day: null };
    this.refresh({ quiet: true }).then(() => $("drill-title").focus());
  }

  async loadDrill(course, current) {
    const text = this.t();
    const range = this.range();
    const { userId, day } = this.drill;
    const daily = await this.get("/api/reports/daily", { userId, courseId: course, ...range });
    if (!current()) return;
    $("course-drill").hidden = false;
    $("drill-title").textContent = text.learnerInCourse(userId, course);
    this.renderDaily("drill", daily, range, (picked) => {
      this.drill.day = picked;
      this.refresh({ quiet: true });
    });
    this.markPicked("drill", day);
    if (!day) return this.renderSessions("drill", null, null);
    const sessions = await this.get("/api/reports/sessions", {
      userId,
      courseId: course,
      from: day,
      to: day,
      tz: this.tz,
      limit: 1000,
    });
    if (!current()) return;
    this.renderSessions("drill", sessions, day);
  }

  /** The learners table as shown (its order, its columns) as CSV, made here from the same data. */
  csv() {
    const text = this.t();
    const dates = this.learnerDates || [];
    const rows = [[text.learner, `${text.time} (s)`, text.sessions, text.lastStudied, text.open, ...dates]];
    for (const l of this.shownLearners || []) {
      rows.push([l.userId, l.seconds, l.sessions, l.lastStudiedAt || "", l.open, ...l.days]);
    }
    return csvText(rows);
  }

  downloadCsv() {
    const blob = new Blob(["\ufeff", this.csv()], { type: "text/csv;charset=utf-8" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    const { from, to } = this.range();
    link.download = `course-${this.course}-learners-${from}-${to}.csv`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  }

  // Pieces shared by the dashboards.

  /** A day chart (uPlot bars), its description and its table of numbers, for `prefix`-chart etc. */
  renderDaily(prefix, response, range, onPick) {
    const text = this.t();
    const dates = daysBetween(range.from, range.to);
    const byDate = new Map((response.body.days || []).map((d) => [d.date, d.seconds]));
    const seconds = dates.map((d) => byDate.get(d) ?? 0);
    const box = $(`${prefix}-chart`);
    box.dataset.url = response.url;
    box.dataset.series = JSON.stringify({ dates, seconds, total: response.body.seconds });
    $(`${prefix}-chart-desc`).textContent = text.chartAlt(dates.length, this.duration(response.body.seconds));
    this.chart(box, dates, seconds, { onPick, height: 220 });
    const table = $(`${prefix}-days`);
    table.dataset.url = response.url;
    this.fillRows(
      table,
      dates.map((d, i) => [
        onPick ? { text: this.day(d), button: `${prefix}-day:${d}`, pick: () => onPick(d), value: d } : { text: this.day(d), value: d },
        { text: this.duration(seconds[i]), value: seconds[i], num: true },
      ]),
      text.noRows,
    );
  }

  markPicked(prefix, day) {
    for (const row of $(`${prefix}-days`).querySelectorAll("tbody tr")) {
      row.classList.toggle("picked", row.cells[0]?.dataset.value === day);
    }
    const plot = this.charts.get(`${prefix}-chart`);
    if (plot) {
      plot.picked = day;
      plot.redraw(false);
    }
  }

  renderSessions(prefix, response, day) {
    const text = this.t();
    const card = $(`${prefix}-sessions`);
    const title = $(`${prefix}-sessions-title`);
    $(`${prefix}-sessions-hint`).hidden = Boolean(day);
    card.hidden = !day;
    title.textContent = day ? text.sessionsOn(this.day(day)) : "";
    if (!response) return;
    card.dataset.url = response.url;
    const showCourse = card.querySelector("th[data-col=course]");
    this.fillRows(
      card,
      (response.body.sessions || []).map((s) => [
        ...(showCourse ? [{ text: s.courseId }] : []),
        { text: this.whenOn(s.startedAt, day), value: s.startedAt },
        { text: s.open ? text.openAsOf(this.clock(this.asOf)) : this.whenOn(s.endedAt, day), value: s.endedAt },
        { text: this.duration(s.seconds), value: s.seconds, num: true },
        { text: s.open ? text.open : text.endReason[s.endReason] || s.endReason || "", value: s.endReason },
      ]),
      text.noRows,
    );
  }

  fillSelect(select, options, value) {
    const key = JSON.stringify(options);
    if (select.dataset.options !== key) {
      select.replaceChildren(...options.map(([v, label]) => new Option(label, v)));
      select.dataset.options = key;
    }
    select.value = value ?? "";
  }

  /**
   * Table rows from cells {text, value?, num?, button?, pick?, spark?}. The
   * element that had the focus is focused again after (a refresh every 15 s
   * must not throw a keyboard user back to the top).
   */
  fillRows(table, rows, empty) {
    const focused = document.activeElement?.dataset?.focus;
    // Each cell carries its column's name: on a phone a row is shown as a card of labelled cells.
    const labels = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
    const body = table.querySelector("tbody");
    body.replaceChildren();
    if (rows.length === 0) {
      const cell = body.insertRow().insertCell();
      cell.colSpan = table.querySelectorAll("thead th").length;
      cell.className = "empty";
      cell.textContent = empty;
    }
    for (const cells of rows) {
      const tr = body.insertRow();
      for (const c of cells) {
        const td = tr.insertCell();
        td.dataset.label = labels[td.cellIndex] || "";
        if (c.num) td.className = "num";
        if (c.value !== undefined && c.value !== null) td.dataset.value = String(c.value);
        if (c.spark) {
          td.className = "spark";
          this.sparkline(td, c.spark);
        } else if (c.button) {
          const button = document.createElement("button");
          button.type = "button";
          button.className = "link";
          button.textContent = c.text;
          button.dataset.focus = c.button;
          button.addEventListener("click", c.pick);
          td.append(button);
        } else {
          td.textContent = c.text;
        }
      }
    }
    if (focused) table.querySelector(`[data-focus="${CSS.escape(focused)}"]`)?.focus();
  }

  // Charts.

  yValues(seconds) {
    const u = this.t().units;
    return seconds.map((v) => (v >= 3600 ? `${+(v / 3600).toFixed(1)} ${u.h}` : `${Math.round(v / 60)} ${u.min}`));
  }

  chart(box, dates, seconds, { onPick, height }) {
    const key = JSON.stringify([this.lang, dates, seconds]);
    const old = this.charts.get(box.id);
    if (old && this.drawn.get(box.id) === key) return;
    const picked = old?.picked ?? null;
    old?.destroy();
    const xs = dates.map((_, i) => i);
    const dash = this;
    const plot = new uPlot(
      {
        width: Math.max(200, box.clientWidth || 300),
        height,
        legend: { show: false },
        select: { show: false },
        cursor: { drag: { x: false, y: false }, points: { show: false }, y: false },
        scales: {
          x: { time: false, range: [-0.5, Math.max(0.5, dates.length - 0.5)] },
          y: { range: (_u, _min, max) => [0, Math.max(max * 1.1, 600)] },
        },
        axes: [
          {
            stroke: COLORS.text,
            grid: { show: false },
            ticks: { show: false },
            space: 44,
            incrs: [1, 2, 7, 14, 28],
            values: (_u, splits) => splits.map((i) => (Number.isInteger(i) && dates[i] ? this.day(dates[i], "short") : "")),
          },
          {
            stroke: COLORS.text,
            grid: { stroke: COLORS.grid },
            ticks: { show: false },
            size: 64,
            incrs: [60, 300, 600, 900, 1800, 3600, 7200, 10800, 18000, 36000, 72000],
            values: (_u, splits) => this.yValues(splits),
          },
        ],
        series: [
          {},
          {
            stroke: COLORS.bar,
            fill: COLORS.barFill,
            width: 0,
            points: { show: false },
            paths: uPlot.paths.bars({ size: [0.7, 48], gap: 1 }),
          },
        ],
        hooks: {
          // The picked day gets an outline, drawn over the bars.
          draw: [
            (u) => {
              const i = dates.indexOf(u.picked);
              if (i < 0) return;
              const x0 = u.valToPos(i - 0.45, "x", true);
              const x1 = u.valToPos(i + 0.45, "x", true);
              const ctx = u.ctx;
              ctx.save();
              ctx.strokeStyle = COLORS.pick;
              ctx.lineWidth = 2 * devicePixelRatio;
              ctx.strokeRect(x0, u.bbox.top, x1 - x0, u.bbox.height);
              ctx.restore();
            },
          ],
        },
      },
      [xs, seconds],
      box,
    );
    plot.picked = picked;
    if (onPick) {
      plot.over.classList.add("pickable");
      plot.over.addEventListener("click", () => {
        const i = plot.cursor.idx;
        if (i !== null && i !== undefined && dates[i]) onPick(dates[i]);
      });
      // The value under the pointer, as words.
      plot.over.addEventListener("mousemove", () => {
        const i = plot.cursor.idx;
        plot.over.title = i !== null && i !== undefined ? `${dash.day(dates[i])}: ${dash.duration(seconds[i])}` : "";
      });
    }
    this.charts.set(box.id, plot);
    this.drawn.set(box.id, key);
  }

  sparkline(td, days) {
    const box = document.createElement("div");
    box.className = "sparkline";
    box.setAttribute("role", "img");
    const studied = days.filter((s) => s > 0).length;
    box.setAttribute("aria-label", this.t().sparkAlt(studied, days.length));
    box.dataset.days = days.join(" ");
    td.append(box);
    const max = Math.max(...days, 1);
    // eslint-disable-next-line no-new
    new uPlot(
      {
        width: 120,
        height: 28,
        legend: { show: false },
        select: { show: false },
        cursor: { show: false },
        axes: [{ show: false }, { show: false }],
        scales: { x: { time: false, range: [-0.5, days.length - 0.5] }, y: { range: [0, max] } },
        series: [{}, { fill: COLORS.barFill, width: 0, points: { show: false }, paths: uPlot.paths.bars({ size: [0.8, 8] }) }],
      },
      [days.map((_, i) => i), days],
      box,
    );
  }

  resize() {
    for (const [id, plot] of this.charts) {
      const box = $(id);
      if (box && box.clientWidth && Math.abs(box.clientWidth - plot.width) > 2) {
        plot.setSize({ width: box.clientWidth, height: plot.height });
      }
    }
  }
}
