// Tables of the dashboards: rows from cells, the select boxes, and sorting by
// a column header the way spreadsheets do.

import { wholeSeconds } from "./dash-format.js";

/**
 * A cell showing a duration: whole seconds in words, the exact seconds in its
 * tooltip and in data-exact, the whole seconds in data-value.
 */
export function durationCell(fmt, exact) {
  const whole = wholeSeconds(exact);
  return { text: fmt.duration(whole), value: whole, exact: Number(exact) || 0, title: fmt.exact(exact), num: true };
}

/**
 * Fill `table`'s body with rows of cells {text, value?, exact?, title?, num?,
 * button?, pick?, render?}. The element that had the focus is focused again
 * after (a refresh must not throw a keyboard user back to the top).
 */
export function fillRows(table, rows, empty) {
  const focused = document.activeElement?.dataset?.focus;
  // Each cell carries its column's name: on a phone a row is shown as a card of labelled cells.
  const labels = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
  const body = table.querySelector("tbody");
  body.replaceChildren();
  if (rows.length === 0) {
    const cell = body.insertRow().insertCell();
    cell.colSpan = labels.length;
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
      if (c.exact !== undefined) td.dataset.exact = String(c.exact);
      if (c.title) td.title = c.title;
      if (c.render) {
        td.className = "spark";
        c.render(td);
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

/** A footer row of `table` (its tfoot made if missing): cells as for fillRows; none removes it. */
export function fillFoot(table, cells) {
  table.querySelector("tfoot")?.remove();
  if (!cells) return;
  const foot = table.createTFoot();
  const labels = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
  const tr = foot.insertRow();
  for (const c of cells) {
    const td = tr.insertCell();
    td.dataset.label = td.cellIndex ? labels[td.cellIndex] || "" : ""; // the first cell names the row
    if (c.num) td.className = "num";
    if (c.value !== undefined && c.value !== null) td.dataset.value = String(c.value);
    if (c.exact !== undefined) td.dataset.exact = String(c.exact);
    if (c.title) td.title = c.title;
    if (c.span) td.colSpan = c.span;
    td.textContent = c.text;
  }
}

/** Replace a select's options (only when they changed, so an open list is left alone) and pick `value`. */
export function fillSelect(select, options, value) {
  const key = JSON.stringify(options);
  if (select.dataset.options !== key) {
    select.replaceChildren(...options.map(([v, label]) => new Option(label, v)));
    select.dataset.options = key;
  }
  select.value = value ?? "";
}

/**
 * The order after pressing the header of column `key`: the same column again
 * turns the order round; a new column starts as spreadsheets do, text A to Z
 * and numbers (and dates: the newest) from the largest.
 */
export function nextSort(current, key, numeric) {
  if (current.key === key) return { key, dir: current.dir === "asc" ? "desc" : "asc" };
  return { key, dir: numeric ? "desc" : "asc" };
}

/** `rows` sorted by `sort` ({key, dir}); ties keep the order they came in (`row.order`). */
export function sortRows(rows, { key, dir }) {
  const sign = dir === "asc" ? 1 : -1;
  return [...rows].sort((a, b) => {
    const x = a[key] ?? "";
    const y = b[key] ?? "";
    const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
    return order * sign || a.order - b.order;
  });
}

/** Mark the sorted column's header (`aria-sort`) and clear the others. */
export function markSort(table, sort) {
  for (const th of table.querySelectorAll("th[data-col]")) {
    const button = th.querySelector("button[data-sort]");
    if (!button) continue;
    const active = button.dataset.sort === sort.key;
    th.setAttribute("aria-sort", active ? (sort.dir === "asc" ? "ascending" : "descending") : "none");
    button.dataset.dir = active ? sort.dir : "";
  }
}
