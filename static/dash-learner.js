// "My study": one learner's time per day (all courses or one), their total
// per course, and the sessions of a picked day. A credential limited to some
// courses (docs/auth.md `--courses`) reads one of them at a time: the reports
// of every course would be refused it (auth/access.py), so there is no "All
// courses" to pick.

import { fillSelect, durationCell, fillRows, fillFoot } from "./dash-table.js";
import { markPicked, renderDaily, renderSessions, roundingNote } from "./dash-days.js";
import { wholeSeconds } from "./dash-format.js";

const $ = (id) => document.getElementById(id);

export class LearnerView {
  /** @param dash the Dashboards (api, fmt, charts, text, range(), refresh()) */
  constructor(dash) {
    this.dash = dash;
    this.course = ""; // the course filter ("" = all)
    this.day = null; // the day whose sessions are listed
    $("learner-course").addEventListener("change", () => {
      this.course = $("learner-course").value;
      this.day = null;
      dash.refresh();
    });
  }

  /** What the long poll for changes watches: this learner (in the chosen course). */
  scope(userId) {
    return { userId, courseId: this.course };
  }

  /** The courses the reader may pick, and the one picked. */
  choices(courses) {
    const text = this.dash.text;
    const limited = this.dash.who.courses; // null: every course
    if (limited) {
      if (!limited.includes(this.course)) this.course = limited[0] || "";
      return limited.map((c) => [c, c]);
    }
    const options = [["", text.allCourses], ...courses.map((c) => [c.courseId, c.courseId])];
    if (this.course && !courses.some((c) => c.courseId === this.course)) options.push([this.course, this.course]);
    return options;
  }

  async load(userId, current) {
    const dash = this.dash;
    const range = dash.range();
    const path = `/api/reports/learners/${encodeURIComponent(userId)}/courses`;
    const courses = await dash.api.get(path, range);
    if (!current()) return;
    const list = courses.body.courses || [];
    fillSelect($("learner-course"), this.choices(list), this.course);
    const limited = dash.who.courses;
    $("learner-limited").hidden = !limited;
    if (limited) $("learner-limited").textContent = dash.text.onlyCourses(limited.length);
    if (limited && !this.course) return dash.setState("empty", dash.text.noCourses);
    const daily = await dash.api.get("/api/reports/daily", { userId, courseId: this.course, ...range });
    if (!current()) return;
    this.renderCourses(courses, list);
    renderDaily(dash, "learner", daily, range, (day) => {
      this.day = day;
      dash.refresh({ quiet: true });
    });
    markPicked(dash, "learner", this.day);
    if (!this.day) return renderSessions(dash, "learner", null, null);
    const sessions = await dash.api.get("/api/reports/sessions", {
      userId,
      courseId: this.course,
      from: this.day,
      to: this.day,
      tz: range.tz,
      limit: 1000,
    });
    if (!current()) return;
    renderSessions(dash, "learner", sessions, this.day);
  }

  /** The total per course; a learner in several courses gets a Total row (the sum of the exact totals). */
  renderCourses(response, list) {
    const { fmt, text } = this.dash;
    const table = $("learner-courses");
    table.dataset.url = response.url;
    const open = text.openAsOf(fmt.clock(this.dash.asOf()));
    fillRows(
      table,
      list.map((c) => [
        { text: c.courseId },
        durationCell(fmt, c.secondsExact ?? c.seconds),
        { text: String(c.sessions), value: c.sessions, num: true },
        { text: c.open ? open : fmt.when(c.lastStudiedAt), value: c.lastStudiedAt },
      ]),
      text.noRows,
    );
    const exact = list.reduce((sum, c) => sum + (c.secondsExact ?? c.seconds), 0);
    const sessions = list.reduce((sum, c) => sum + c.sessions, 0);
    fillFoot(
      table,
      list.length > 1
        ? [{ text: text.total }, durationCell(fmt, exact), { text: String(sessions), value: sessions, num: true }, { text: "" }]
        : null,
    );
    roundingNote(this.dash, "learner-courses-rounding", list.map((c) => c.seconds), wholeSeconds(exact));
  }
}
