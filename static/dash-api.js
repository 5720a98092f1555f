// The report endpoints as the dashboards call them: a bearer token, JSON, and
// one error type for every refusal (docs/reports.md).

export class ReportError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code || null;
    this.parameter = body?.error?.parameter || null;
  }
}

export class ReportApi {
  /** @param {() => {server: string, token: string}} form  @param {(server: string) => string} httpBase */
  constructor(form, httpBase) {
    this.form = form;
    this.httpBase = httpBase;
    this.asOf = null; // the newest answer's asOf
  }

  /** The URL of `path` with the non-empty `query` values. */
  url(path, query = {}) {
    const url = new URL(this.httpBase(this.form().server) + path);
    for (const [name, value] of Object.entries(query)) {
      if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, value);
    }
    return url;
  }

  /** GET a report: `{body, url}` (url as path and query, for data-url), or throw ReportError. */
  async get(path, query = {}, { signal } = {}) {
    const url = this.url(path, query);
    const token = this.form().token;
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(url, { headers, cache: "no-store", signal });
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) throw new ReportError(response.status, body);
    if (body && body.asOf && !signal) this.asOf = body.asOf;
    return { body, url: url.pathname + url.search };
  }
}
