// The reports view: dashboards for a learner, a teacher and an admin, drawn
// from the report endpoints only (docs/reports.md). /api/reports/whoami says
// who the credential is and so which dashboards to show; each number on screen
// is a number of a report response (days without study are shown as 0).
//
// This module holds the controls and the refresh; the views are
// dash-learner.js ("My study") and dash-course.js ("Courses", with
// dash-drill.js); tables, charts and formatting are dash-table.js,
// dash-chart.js and dash-format.js; freshness is dash-changes.js.
//
// Each chart has a text alternative: a description (aria-describedby) and a
// table of the same numbers under "Show the numbers". For the browser tests
// every chart keeps the request it drew and its series in data-url /
// data-series, and every number cell its value in data-value (and a time
// its exact seconds in data-exact).

import { TEXT } from "./i18n.js";
import { ReportApi, ReportError } from "./dash-api.js";
import { Changes } from "./dash-changes.js";
import { Charts } from "./dash-chart.js";
import { CourseView } from "./dash-course.js";
import { Formats, addDays, today } from "./dash-format.js";
import { LearnerView } from "./dash-learner.js";

const $ = (id) => document.getElementById(id);
/** After a network error or a 503, the view tries again this much later. */
const RETRY_MS = 15_000;

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
    this.fmt = new Formats(this.lang, this.tz);
    this.api = new ReportApi(o.form, o.httpBase);
    this.charts = new Charts();
    this.changes = new Changes(this.api, () => this.refresh({ quiet: true }));
    this.generation = 0;
    this.needsToken = false; // the server answered 401: without a token, say "enter your token"
    this.retry = null; // the next try after an error
    this.learner = new LearnerView(this);
    this.course = new CourseView(this);
    this.fillZones();
    this.bind();
    this.setRange("7");
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.refresh({ quiet: true });
      else this.changes.stop();
    });
    new ResizeObserver(() => this.charts.resize()).observe(o.root);
  }

  get text() {
    return TEXT[this.lang];
  }

  asOf() {
    return this.api.asOf;
  }

  // Controls.

  /** Every time zone, named in the page's language ("中国标准时间（Asia/Shanghai）"). */
  fillZones() {
    const select = $("dash-tz");
    const zones = new Set(Intl.supportedValuesOf ? Intl.supportedValuesOf("timeZone") : []);
    zones.add(this.tz);
    zones.add("UTC");
    select.replaceChildren(...[...zones].sort().map((zone) => new Option(this.fmt.zone(zone), zone)));
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
      this.fmt = new Formats(this.lang, this.tz);
      this.setRange($("dash-range").value);
    });
    $("refresh").addEventListener("click", () => this.refresh());
    for (const view of ["learner", "course"]) {
      $(`dash-view-${view}`).addEventListener("click", () => {
        this.view = view;
        this.refresh();
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
    this.fmt = new Formats(lang, this.tz);
    this.charts.forget();
    this.fillZones();
    this.refresh();
  }

  setVisible(visible) {
    this.visible = visible;
    if (visible) this.refresh();
    else this.changes.stop();
  }

  // Loading.

  /** Load what the view shows and draw it; a newer refresh makes an older one's answers moot. */
  async refresh({ quiet = false } = {}) {
    this.changes.stop();
    clearTimeout(this.retry);
    if (!this.visible) return;
    const generation = ++this.generation;
    const current = () => generation === this.generation;
    this.o.root.dataset.busy = "1"; // until the newest refresh has drawn (the tests wait for it)
    const text = this.text;
    const blocked = this.o.reach();
    if (blocked) {
      this.o.root.dataset.busy = "0";
      return this.setState(blocked.state, blocked.words);
    }
    if (!this.o.form().token && this.needsToken) {
      this.o.root.dataset.busy = "0";
      return this.setState("need_token", text.needToken);
    }
    if (!quiet && !this.who) this.setState("loading", text.loading);
    let scope = null;
    try {
      const who = (await this.api.get("/api/reports/whoami")).body;
      if (!current()) return;
      this.who = who;
      const views = this.views();
      if (!views.includes(this.view)) this.view = views.includes("course") ? "course" : "learner";
      this.renderHeader(views);
      this.setState("loading", null, true);
      if (this.view === "learner") {
        const learner = this.learnerId();
        if (!learner) return this.setState("need_ids", text.needUser);
        await this.learner.load(learner, current);
        scope = this.learner.scope(learner);
      } else {
        await this.course.load(current);
        scope = this.course.scope();
      }
      if (!current()) return;
      if (this.o.root.dataset.state === "loading") this.setState("ok");
    } catch (error) {
      if (current()) this.failed(error);
    } finally {
      if (current()) {
        this.o.root.dataset.busy = "0";
        if (scope && this.o.root.dataset.state === "ok") this.changes.watch(scope, this.api.asOf);
      }
    }
  }

  /**
   * The dashboards this reader has: "My study" for anyone with a user id (a
   * teacher's or admin's own study too; an anonymous admin's is the Live
   * tab's user), "Courses" for teachers and admins.
   */
  views() {
    const who = this.who;
    if (who.dashboards) return who.dashboards; // the server's policy (auth/access.py dashboards)
    return [...(who.userId || who.admin ? ["learner"] : []), ...(who.admin || who.teacher ? ["course"] : [])];
  }

  /** Whose study "My study" shows: the credential's user, or (no sign-in) the Live tab's user id. */
  learnerId() {
    const who = this.who;
    if (who.userId) return who.userId;
    return who.admin ? this.o.form().userId || null : null;
  }

  failed(error) {
    const text = this.text;
    if (!(error instanceof ReportError)) {
      this.retry = setTimeout(() => this.refresh({ quiet: true }), RETRY_MS);
      this.setState("error", text.reportsFailed(error.message || text.network));
      return;
    }
    if (error.status === 404 && !this.who) return this.setState("missing", text.reportsMissing);
    if (error.status === 401) {
      // The server wants a credential: without one, say so (not "the token is not valid").
      this.needsToken = true;
      this.who = null;
      if (!this.o.form().token) return this.setState("need_token", text.needToken);
      return this.setState("denied", text.reportsUnauthorized);
    }
    if (error.status === 403) return this.setState("forbidden", text.reportsForbidden);
    if (error.status === 503) {
      this.retry = setTimeout(() => this.refresh({ quiet: true }), RETRY_MS); // "trying again shortly"
      return this.setState("unavailable", text.storeUnavailable);
    }
    if (error.status === 400) return this.setState("error", text.invalidParameter(error.parameter || error.code));
    this.setState("error", text.reportsFailed(`HTTP ${error.status}`));
  }

  /** The view's state ("ok", "loading", or why nothing is shown, in `words`). */
  setState(name, words, keepNotice = false) {
    const state = $("reports-state");
    state.dataset.state = name;
    this.o.root.dataset.state = name;
    if (name === "ok" || keepNotice) {
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
    const text = this.text;
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
  }

  renderAsOf() {
    const el = $("dash-asof");
    const asOf = this.api.asOf;
    el.textContent = asOf ? this.text.asOf(this.fmt.clock(asOf)) : "";
    el.dataset.asof = asOf || "";
    const zone = this.text.zoneNote(this.fmt.zone());
    for (const note of document.querySelectorAll("#view-reports [data-zone]")) {
      note.textContent = zone;
      note.dataset.zone = this.tz;
    }
  }
}
