// Formatting for the dashboards: calendar days, times in the report's time
// zone, durations, exact seconds and CSV cells. Pure (Intl only), so the same
// rules run in Node for tests/test_shared_rules.py.
//
// One rounding rule: a report's `secondsExact` is rounded down to the whole
// second once, where it is shown (wholeSeconds). A day's time therefore does
// not depend on the range it is shown in.

import { TEXT, humanDuration, locale } from "./i18n.js";

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

export function addDays(date, n) {
  const day = new Date(`${date}T00:00:00Z`);
  day.setUTCDate(day.getUTCDate() + n);
  return day.toISOString().slice(0, 10);
}

/** Today's date "YYYY-MM-DD" in time zone `tz`. */
export function today(tz) {
  return new Intl.DateTimeFormat("en-CA", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit" }).format(
    new Date(),
  );
}

/** The whole seconds shown for an exact credit (fractions dropped, as `studyTime` and `seconds` do). */
export function wholeSeconds(exact) {
  return Math.floor(Number(exact) || 0);
}

/** Exact seconds as text, to the microsecond and no further: "3725.5", "60". */
export function exactText(exact) {
  return String(Number((Number(exact) || 0).toFixed(6)));
}

/** What a spreadsheet takes as the start of a formula (reports/rows.py FORMULA_TRIGGERS). */
export const FORMULA_TRIGGERS = ["=", "+", "-", "@", "\t", "\r"];

/** One CSV cell: text that a spreadsheet would take for a formula gets a leading ' (as the server's CSV). */
export function csvCell(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "boolean") return value ? "true" : "false";
  if (typeof value === "number") return String(value);
  let text = String(value);
  if (FORMULA_TRIGGERS.some((t) => text.startsWith(t))) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** CSV lines (CRLF) of `rows`, each an array of cells. */
export function csvText(rows) {
  return rows.map((row) => row.map(csvCell).join(",")).join("\r\n") + "\r\n";
}

/** The words of the page's language for times, days and durations in the report's zone `tz`. */
export class Formats {
  constructor(lang, tz) {
    this.lang = lang;
    this.tz = tz;
    this.locale = locale(lang);
  }

  get text() {
    return TEXT[this.lang];
  }

  /** "14:02:05" in the report's zone. */
  clock(iso) {
    return new Intl.DateTimeFormat(this.locale, {
      timeZone: this.tz,
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
      hourCycle: "h23",
    }).format(new Date(iso));
  }

  /** A date and time: "Oct 3, 2024, 14:02". */
  when(iso) {
    if (!iso) return "";
    return new Intl.DateTimeFormat(this.locale, {
      timeZone: this.tz,
      year: "numeric",
      month: "short",
      day: "numeric",
      hour: "2-digit",
      minute: "2-digit",
      hourCycle: "h23",
    }).format(new Date(iso));
  }

  /** The calendar day "YYYY-MM-DD" of an instant in the report's zone. */
  dateOf(iso) {
    return new Intl.DateTimeFormat("en-CA", { timeZone: this.tz }).format(new Date(iso));
  }

  /** A time on `day` as "14:02", one on another day with its date too (a session across midnight). */
  whenOn(iso, day) {
    if (!iso) return "";
    const date = new Date(iso);
    const sameDay = this.dateOf(iso) === day;
    return new Intl.DateTimeFormat(this.locale, {
      timeZone: this.tz,
      ...(sameDay ? {} : { month: "short", day: "numeric" }),
      hour: "2-digit",
      minute: "2-digit",
      hourCycle: "h23",
    }).format(date);
  }

  /** A calendar day "YYYY-MM-DD" for people ("Tue, Oct 3" / "10月3日周二"). */
  day(date, style = "long") {
    const options =
      style === "short" ? { month: "numeric", day: "numeric" } : { weekday: "short", month: "short", day: "numeric" };
    return new Intl.DateTimeFormat(this.locale, { ...options, timeZone: "UTC" }).format(new Date(`${date}T00:00:00Z`));
  }

  /** Whole seconds (already rounded) as "1h 05m 35s". */
  duration(seconds) {
    return humanDuration(this.lang, seconds);
  }

  /** The tooltip of a shown time: its exact seconds. */
  exact(seconds) {
    return this.text.exact(exactText(seconds));
  }

  /** A time zone in words of the page's language, with its IANA name: "China Standard Time (Asia/Shanghai)". */
  zone(tz = this.tz) {
    let name = "";
    try {
      const parts = new Intl.DateTimeFormat(this.locale, { timeZone: tz, timeZoneName: "longGeneric" }).formatToParts(
        new Date(),
      );
      name = parts.find((p) => p.type === "timeZoneName")?.value || "";
    } catch {
      name = "";
    }
    if (!name || name === tz) return tz;
    return this.lang === "zh" ? `${name}（${tz}）` : `${name} (${tz})`;
  }
}
