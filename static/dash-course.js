// "Courses" (teachers and admins): a course's time per day, each learner of
// the course (sortable, downloadable as CSV, with a sparkline on one shared
// scale), the learners of a picked day beside the course's total for it, and
// a learner's days and sessions in the course (dash-drill.js).

import { ReportError } from "./dash-api.js";
import { sparkline } from "./dash-chart.js";
import { markPicked, renderDaily, roundingNote } from "./dash-days.js";
import { csvText, wholeSeconds } from "./dash-format.js";
import { DrillView } from "./dash-drill.js";
import { durationCell, fillFoot, fillRows, fillSelect, markSort, nextSort, sortRows } from "./dash-table.js";

const $ = (id) => document.getElementById(id);

export class CourseView {
  constructor(dash) {
    this.dash = dash;
    this.course = null;
    this.day = null; // the day whose learners are listed
    this.sort = { key: "seconds", dir: "desc" };
    this.rows = [];
    this.shown = [];
    this.dates = [];
    this.drill = new DrillView(dash, () => this.course);
    $("course-pick").addEventListener("change", () => {
      this.course = $("course-pick").value;
      this.day = null;
      this.drill.close();
      dash.refresh();
    });
    $("course-csv").addEventListener("click", () => this.download());
    for (const button of $("course-learners").querySelectorAll("th button[data-sort]")) {
      button.addEventListener("click", () => {
        this.sort = nextSort(this.sort, button.dataset.sort, button.dataset.type === "number");
        this.renderLearners();
      });
    }
  }

  scope() {
    return { courseId: this.course };
  }

  /** The courses to pick from: the course list, or (refused it) the credential's own courses. */
  async courseIds(current) {
    const dash = this.dash;
    let ids;
    try {
      const courses = await dash.api.get("/api/reports/courses", { ...dash.range(), limit: 1000 });
      ids = (courses.body.courses || []).map((c) => c.courseId);
      $("course-pick").dataset.url = courses.url;
    } catch (error) {
      if (!(error instanceof ReportError) || error.status !== 403) throw error;
      ids = [...(dash.who.courses || [])];
    }
    if (!current()) return null;
    const wanted = dash.o.form().courseId;
    for (const extra of [this.course, wanted, ...(dash.who.courses || [])]) {
      if (extra && !ids.includes(extra) && (!dash.who.courses || dash.who.courses.includes(extra))) ids.push(extra);
    }
    if (!this.course || !ids.includes(this.course)) this.course = ids.includes(wanted) ? wanted : ids[0] || null;
    return ids;
  }

  async load(current) {
    const dash = this.dash;
    const text = dash.text;
    const ids = await this.courseIds(current);
    if (!ids) return;
    fillSelect(
      $("course-pick"),
      ids.map((id) => [id, id]),
      this.course,
    );
    if (!this.course) return dash.setState("empty", text.noCourses);
    const course = this.course;
    const path = encodeURIComponent(course);
    const range = dash.range();
    const [daily, learners, board] = await Promise.all([
      dash.api.get("/api/reports/daily", { courseId: course, ...range }),
      dash.api.get(`/api/reports/courses/${path}/daily-learners`, { ...range, limit: 1000 }),
      dash.api.get(`/api/reports/courses/${path}/learners`, { ...range, limit: 1000 }),
    ]);
    if (!current()) return;
    $("course-chart-title").textContent = text.courseDaily(course);
    $("course-learners-title").textContent = text.learnersOf(course);
    this.daily = daily;
    renderDaily(dash, "course", daily, range, (day) => {
      this.day = day;
      dash.refresh({ quiet: true });
    });
    const extra = new Map((board.body.learners || []).map((l) => [l.userId, l]));
    this.dates = learners.body.dates || [];
    this.rows = (learners.body.learners || []).map((l, i) => ({
      order: i,
      userId: l.userId,
      exact: l.secondsExact ?? l.seconds,
      seconds: l.seconds,
      days: l.days,
      daysExact: l.daysExact || l.days,
      sessions: extra.get(l.userId)?.sessions ?? 0,
      lastStudiedAt: extra.get(l.userId)?.lastStudiedAt ?? null,
      open: extra.get(l.userId)?.open ?? false,
    }));
    $("course-learners").dataset.url = learners.url;
    $("course-learners").dataset.boardUrl = board.url;
    this.renderLearners();
    if (this.day && !this.dates.includes(this.day)) this.day = null;
    markPicked(dash, "course", this.day);
    this.renderDay();
    await this.drill.load(current);
  }

  renderLearners() {
    const { fmt, text } = this.dash;
    const table = $("course-learners");
    markSort(table, this.sort);
    this.shown = sortRows(this.rows, this.sort);
    // One scale for every sparkline of the table: the most any learner studied in a day.
    const max = Math.max(0, ...this.rows.flatMap((l) => l.days));
    $("course-spark-scale").textContent = text.sparkScale(fmt.duration(max));
    const open = text.openAsOf(fmt.clock(this.dash.asOf()));
    fillRows(
      table,
      this.shown.map((l) => [
        { text: l.userId, button: `learner:${l.userId}`, pick: () => this.drill.open(l.userId) },
        durationCell(fmt, l.exact),
        { text: String(l.sessions), value: l.sessions, num: true },
        { text: l.open ? open : fmt.when(l.lastStudiedAt), value: l.lastStudiedAt },
        {
          value: l.days.join(" "),
          render: (td) =>
            sparkline(td, l.days, max, text.sparkAlt(l.days.filter((s) => s > 0).length, l.days.length, fmt.duration(Math.max(0, ...l.days)))),
        },
      ]),
      text.noRows,
    );
    // The course's total beside its learners: the same exact credit, rounded once.
    const totalExact = this.daily.body.secondsExact ?? this.daily.body.seconds;
    const sessions = this.rows.reduce((sum, l) => sum + l.sessions, 0);
    fillFoot(table, [
      { text: text.total },
      durationCell(fmt, totalExact),
      { text: String(sessions), value: sessions, num: true },
      { text: "", span: 2 },
    ]);
    roundingNote(this.dash, "course-learners-rounding", this.rows.map((l) => l.seconds), wholeSeconds(totalExact));
  }

  /** The learners of the picked day, each with their time that day, and the course's total for the day. */
  renderDay() {
    const { fmt, text } = this.dash;
    const card = $("course-day");
    $("course-day-hint").hidden = Boolean(this.day);
    card.hidden = !this.day;
    if (!this.day) return;
    const i = this.dates.indexOf(this.day);
    $("course-day-title").textContent = text.learnersOn(fmt.day(this.day));
    const rows = this.rows.filter((l) => l.daysExact[i] > 0).sort((a, b) => b.daysExact[i] - a.daysExact[i]);
    const table = $("course-day-learners");
    fillRows(
      table,
      rows.map((l) => [{ text: l.userId, value: l.userId }, durationCell(fmt, l.daysExact[i])]),
      text.noRows,
    );
    const day = (this.daily.body.days || []).find((d) => d.date === this.day);
    const exact = day ? (day.secondsExact ?? day.seconds) : 0;
    fillFoot(table, [{ text: text.total }, durationCell(fmt, exact)]);
    roundingNote(
      this.dash,
      "course-day-rounding",
      rows.map((l) => wholeSeconds(l.daysExact[i])),
      wholeSeconds(exact),
    );
  }

  /** The learners table as shown (its order, its columns) as CSV, made here from the same data. */
  csv() {
    const text = this.dash.text;
    const rows = [[text.learner, `${text.time} (s)`, text.sessions, text.lastStudied, text.open, ...this.dates]];
    for (const l of this.shown) rows.push([l.userId, l.seconds, l.sessions, l.lastStudiedAt || "", l.open, ...l.days]);
    return csvText(rows);
  }

  download() {
    const blob = new Blob(["\ufeff", this.csv()], { type: "text/csv;charset=utf-8" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    const { from, to } = this.dash.range();
    link.download = `course-${this.course}-learners-${from}-${to}.csv`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  }
}
