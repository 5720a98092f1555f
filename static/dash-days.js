// What the views share: a chart of time per day with its table of numbers,
// and the list of a day's sessions. `view` gives `fmt` (dash-format.js
// Formats), `charts` (dash-chart.js Charts) and `text` (the page's words).

import { daysBetween, wholeSeconds } from "./dash-format.js";
import { durationCell, fillFoot, fillRows } from "./dash-table.js";

const $ = (id) => document.getElementById(id);

/**
 * The day chart `PREFIX-chart` of a /api/reports/daily answer over `range`,
 * its description and its numbers (`PREFIX-days`, with a Total row).
 * Each day is its exact seconds rounded down once, here, so a day shows the
 * same whatever range it is part of; when the rounded days do not add up to
 * the rounded total, `PREFIX-rounding` says why.
 */
export function renderDaily(view, prefix, response, range, onPick) {
  const { fmt, text } = view;
  const dates = daysBetween(range.from, range.to);
  const byDate = new Map((response.body.days || []).map((d) => [d.date, d.secondsExact ?? d.seconds]));
  const exact = dates.map((d) => byDate.get(d) ?? 0);
  const seconds = exact.map(wholeSeconds);
  const totalExact = response.body.secondsExact ?? response.body.seconds;
  const total = wholeSeconds(totalExact);
  const box = $(`${prefix}-chart`);
  box.dataset.url = response.url;
  box.dataset.series = JSON.stringify({ dates, seconds, exact, total, totalExact, tz: response.body.tz });
  $(`${prefix}-chart-desc`).textContent = text.chartAlt(dates.length, fmt.duration(total));
  view.charts.days(box, dates, seconds, { fmt, onPick });
  const table = $(`${prefix}-days`);
  table.dataset.url = response.url;
  fillRows(
    table,
    dates.map((d, i) => [
      onPick
        ? { text: fmt.day(d), button: `${prefix}-day:${d}`, pick: () => onPick(d), value: d }
        : { text: fmt.day(d), value: d },
      durationCell(fmt, exact[i]),
    ]),
    text.noRows,
  );
  fillFoot(table, [{ text: text.total }, durationCell(fmt, totalExact)]);
  roundingNote(view, `${prefix}-rounding`, seconds, total);
  policyNote(view, `${prefix}-policy`, response.body.overlapPolicy || []);
}

/**
 * Which `--overlap-policy` recorded the range (the daily answer's
 * `overlapPolicy` periods, docs/reports.md), in element `id`: said only when
 * `one-course` recorded some of it ("Time counted one course at a time"),
 * with when it began or ended inside the range. The default, each course
 * counting its own time, needs no line.
 */
export function policyNote(view, id, periods) {
  const note = $(id);
  if (!note) return;
  const { fmt, text } = view;
  note.dataset.policy = JSON.stringify(periods);
  const last = periods.length - 1;
  const spans = periods.flatMap((p, i) => {
    if (p.policy !== "one-course") return [];
    // A period's bound is a change of policy only inside the range (the range's own ends are not).
    const from = i > 0 ? fmt.when(p.from) : null;
    const to = i < last ? fmt.when(p.to) : null;
    return [from && to ? text.policySpan.between(from, to) : from ? text.policySpan.from(from) : text.policySpan.until(to)];
  });
  note.hidden = spans.length === 0;
  note.textContent = spans.length === 0 ? "" : periods.length === 1 ? text.oneCourseAll : text.oneCourseSome(spans);
}

/** Show the note on rounding (element `id`) when the rounded `parts` do not add up to the rounded `total`. */
export function roundingNote(view, id, parts, total) {
  const note = $(id);
  if (!note) return;
  const sum = parts.reduce((a, b) => a + b, 0);
  note.hidden = sum === total;
  note.textContent = view.text.rounding;
  note.dataset.sum = String(sum);
  note.dataset.total = String(total);
}

/** Outline the picked day in the chart and its row in the numbers. */
export function markPicked(view, prefix, day) {
  for (const row of $(`${prefix}-days`).querySelectorAll("tbody tr")) {
    row.classList.toggle("picked", row.cells[0]?.dataset.value === day);
  }
  view.charts.pick(`${prefix}-chart`, day);
}

/**
 * The sessions of `day` (a /api/reports/sessions answer) in `PREFIX-sessions`.
 * "Counted until" is when crediting stopped (`creditedUntil`), not when the
 * connection was closed: a timed-out session's silence before the timeout
 * earned nothing and is not shown as study.
 */
export function renderSessions(view, prefix, response, day) {
  const { fmt, text } = view;
  const card = $(`${prefix}-sessions`);
  $(`${prefix}-sessions-hint`).hidden = Boolean(day);
  card.hidden = !day;
  $(`${prefix}-sessions-title`).textContent = day ? text.sessionsOn(fmt.day(day)) : "";
  if (!response) return;
  card.dataset.url = response.url;
  const table = card.querySelector("table");
  const showCourse = Boolean(table.querySelector("th[data-col=course]"));
  const open = text.openAsOf(fmt.clock(view.asOf()));
  // A session that began before the day or was credited after it counts only its part of the day.
  const across = (response.body.sessions || []).some(
    (s) => fmt.dateOf(s.startedAt) !== day || fmt.dateOf(s.creditedUntil) !== day,
  );
  const note = $(`${prefix}-sessions-note`);
  note.hidden = !across;
  note.textContent = text.acrossMidnight;
  fillRows(
    table,
    (response.body.sessions || []).map((s) => [
      ...(showCourse ? [{ text: s.courseId }] : []),
      { text: fmt.whenOn(s.startedAt, day), value: s.startedAt },
      s.open ? { text: open, value: s.creditedUntil } : { text: fmt.whenOn(s.creditedUntil, day), value: s.creditedUntil },
      durationCell(fmt, s.secondsExact ?? s.seconds),
      { text: s.open ? text.open : text.endReason[s.endReason] || s.endReason || "", value: s.endReason },
    ]),
    text.noRows,
  );
}
