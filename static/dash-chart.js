// Charts of the dashboards: uPlot bars of time per day, and the sparklines of
// the learners table. uPlot is static/vendor/uPlot.iife.min.js, a classic
// script that defines window.uPlot.

const COLORS = { bar: "#2458d3", barFill: "rgba(36, 88, 211, 0.75)", pick: "#d98a00", grid: "#e6eaf0", text: "#5d6778" };

/** The charts of a view, by element id, redrawn only when what they show changes. */
export class Charts {
  constructor() {
    this.plots = new Map(); // element id -> uPlot
    this.drawn = new Map(); // element id -> key of what it shows
  }

  forget() {
    this.drawn.clear(); // every label is words: a new language redraws everything
  }

  /**
   * Bars of `seconds` per day of `dates` in `box`; `onPick(date)` when a bar is
   * clicked; `fmt` words the axes and the tooltip.
   */
  days(box, dates, seconds, { fmt, onPick, height = 220 }) {
    const uPlot = window.uPlot;
    const key = JSON.stringify([fmt.lang, fmt.locale, dates, seconds]);
    const old = this.plots.get(box.id);
    if (old && this.drawn.get(box.id) === key) return;
    const picked = old?.picked ?? null;
    old?.destroy();
    const u = fmt.text.units;
    const yWords = (values) =>
      values.map((v) => (v >= 3600 ? `${+(v / 3600).toFixed(1)}${u.h}` : `${Math.round(v / 60)}${u.min}`));
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
            values: (_u, splits) => splits.map((i) => (Number.isInteger(i) && dates[i] ? fmt.day(dates[i], "short") : "")),
          },
          {
            stroke: COLORS.text,
            grid: { stroke: COLORS.grid },
            ticks: { show: false },
            size: 56,
            incrs: [60, 300, 600, 900, 1800, 3600, 7200, 10800, 18000, 36000, 72000],
            values: (_u, splits) => yWords(splits),
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
            (p) => {
              const i = dates.indexOf(p.picked);
              if (i < 0) return;
              const x0 = p.valToPos(i - 0.45, "x", true);
              const x1 = p.valToPos(i + 0.45, "x", true);
              const ctx = p.ctx;
              ctx.save();
              ctx.strokeStyle = COLORS.pick;
              ctx.lineWidth = 2 * devicePixelRatio;
              ctx.strokeRect(x0, p.bbox.top, x1 - x0, p.bbox.height);
              ctx.restore();
            },
          ],
        },
      },
      [dates.map((_, i) => i), seconds],
      box,
    );
    plot.picked = picked;
    if (onPick) {
      plot.over.classList.add("pickable");
      plot.over.addEventListener("click", () => {
        const i = plot.cursor.idx;
        if (i !== null && i !== undefined && dates[i]) onPick(dates[i]);
      });
    }
    // The value under the pointer, as words.
    plot.over.addEventListener("mousemove", () => {
      const i = plot.cursor.idx;
      plot.over.title = i !== null && i !== undefined ? `${fmt.day(dates[i])}: ${fmt.duration(seconds[i])}` : "";
    });
    this.plots.set(box.id, plot);
    this.drawn.set(box.id, key);
  }

  /** Outline `day` in the chart of `id` (null: none). */
  pick(id, day) {
    const plot = this.plots.get(id);
    if (plot) {
      plot.picked = day;
      plot.redraw(false);
    }
  }

  resize() {
    for (const [id, plot] of this.plots) {
      const box = document.getElementById(id);
      if (box && box.clientWidth && Math.abs(box.clientWidth - plot.width) > 2) {
        plot.setSize({ width: box.clientWidth, height: plot.height });
      }
    }
  }
}

/**
 * A sparkline of `days` (seconds per day) in `td`, on the scale 0..`max`
 * shared by every row of its table, so 5 minutes and 5 hours do not draw the
 * same peak. `label` is its text alternative.
 */
export function sparkline(td, days, max, label) {
  const uPlot = window.uPlot;
  const box = document.createElement("div");
  box.className = "sparkline";
  box.setAttribute("role", "img");
  box.setAttribute("aria-label", label);
  box.dataset.days = days.join(" ");
  box.dataset.max = String(max);
  td.append(box);
  // eslint-disable-next-line no-new
  new uPlot(
    {
      width: 120,
      height: 28,
      legend: { show: false },
      select: { show: false },
      cursor: { show: false },
      axes: [{ show: false }, { show: false }],
      scales: { x: { time: false, range: [-0.5, days.length - 0.5] }, y: { range: [0, Math.max(max, 1)] } },
      series: [{}, { fill: COLORS.barFill, width: 0, points: { show: false }, paths: uPlot.paths.bars({ size: [0.8, 8] }) }],
    },
    [days.map((_, i) => i), days],
    box,
  );
}
