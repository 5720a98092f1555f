// Freshness: a long poll of /api/reports/changes (docs/reports.md, "Changes").
// The server holds the request until a session in the view's scope has ended
// after `since` (the asOf of the figures shown), or until its hold (25 s)
// runs out; either answer makes the view refresh, which watches again from
// its new asOf. One request is open per visible dashboard, instead of a
// refresh every 15 s; a server without the endpoint (or an error) falls back
// to refreshing every FALLBACK_MS.

const FALLBACK_MS = 15_000;

export class Changes {
  /** @param api ReportApi  @param onChange () => refresh the view */
  constructor(api, onChange) {
    this.api = api;
    this.onChange = onChange;
    this.key = null; // what is being watched, as JSON
    this.abort = null;
    this.timer = null;
  }

  /** Watch `scope` ({userId?, courseId?}) for changes after `since` (ISO instant); replaces any watch. */
  watch(scope, since) {
    this.stop();
    if (!since || !(scope.userId || scope.courseId)) return;
    const key = JSON.stringify([scope, since]);
    this.key = key;
    this.abort = new AbortController();
    this.poll(key, scope, since, this.abort.signal);
  }

  stop() {
    this.key = null;
    this.abort?.abort();
    this.abort = null;
    clearTimeout(this.timer);
    this.timer = null;
  }

  async poll(key, scope, since, signal) {
    try {
      await this.api.get("/api/reports/changes", { ...scope, since }, { signal });
    } catch {
      if (this.key !== key) return; // stopped: a newer watch or a hidden view
      this.key = null;
      this.timer = setTimeout(() => this.onChange(), FALLBACK_MS);
      return;
    }
    if (this.key !== key) return;
    // Changed, or the hold ran out (a session ended on another process in the instant
    // between the figures and this request is caught then): read the figures again.
    this.key = null;
    this.onChange();
  }
}
