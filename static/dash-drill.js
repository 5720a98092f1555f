// A learner of a course, opened from the course's learners table: their time
// per day in the course and the sessions of a picked day.

import { markPicked, renderDaily, renderSessions } from "./dash-days.js";

const $ = (id) => document.getElementById(id);

export class DrillView {
  /** @param course () => the course of the course view */
  constructor(dash, course) {
    this.dash = dash;
    this.course = course;
    this.target = null; // {userId, day}
    $("drill-close").addEventListener("click", () => {
      const user = this.target?.userId;
      this.close();
      document.querySelector(`#course-learners [data-focus="learner:${CSS.escape(user || "")}"]`)?.focus();
    });
  }

  open(userId) {
    this.target = { userId, day: null };
    this.dash.refresh({ quiet: true }).then(() => $("drill-title").focus());
  }

  close() {
    this.target = null;
    $("course-drill").hidden = true;
  }

  async load(current) {
    if (!this.target) {
      $("course-drill").hidden = true;
      return;
    }
    const dash = this.dash;
    const course = this.course();
    const range = dash.range();
    const { userId, day } = this.target;
    const daily = await dash.api.get("/api/reports/daily", { userId, courseId: course, ...range });
    if (!current()) return;
    $("course-drill").hidden = false;
    $("drill-title").textContent = dash.text.learnerInCourse(userId, course);
    renderDaily(dash, "drill", daily, range, (picked) => {
      this.target.day = picked;
      dash.refresh({ quiet: true });
    });
    markPicked(dash, "drill", day);
    if (!day) return renderSessions(dash, "drill", null, null);
    const sessions = await dash.api.get("/api/reports/sessions", {
      userId,
      courseId: course,
      from: day,
      to: day,
      tz: range.tz,
      limit: 1000,
    });
    if (!current()) return;
    renderSessions(dash, "drill", sessions, day);
  }
}
