// Latency charts with uPlot (vendored: vendor/uplot, see VERSION there): one line per model/app
// and quantile, points per minute of the last hour, in milliseconds. A chart is built once per set
// of lines and then only given new data (`setData`), never rebuilt for a refresh.

const COLORS = ["#2f5bea", "#e04f39", "#12b76a", "#f79009", "#7a5af8", "#06aed4", "#dd2590", "#667085"];
// The y axis steps through 1, 2 and 5 times a power of ten, so a tick needs exactly as many decimals
// as its step has: labels never repeat (uPlot's default steps include 2.5, which with a short
// format wrote 0.001, 0.001, 0.002 on a TPOT axis of a few milliseconds).
const STEPS = [];
for (let exp = -4; exp <= 6; exp++) for (const m of [1, 2, 5]) STEPS.push(Number((m * 10 ** exp).toPrecision(1)));

// The labels of ticks `splits` (evenly spaced): each with the decimals its step needs.
export function tickLabels(splits) {
  const step = splits.length > 1 ? Math.abs(splits[1] - splits[0]) : 1;
  const decimals = Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9)));
  return splits.map((v) => v.toFixed(decimals));
}

export class LatencyCharts {
  constructor(ttftNode, tpotNode) {
    this.nodes = { ttft: ttftNode, tpot: tpotNode };
    this.plots = {};
    this.shapes = {};
  }

  update(series) {
    for (const metric of ["ttft", "tpot"]) this.draw(metric, series);
  }

  draw(metric, series) {
    if (typeof uPlot === "undefined") return;
    const times = [...new Set(series.flatMap((s) => s.points.map((p) => p.t)))].sort((a, b) => a - b);
    const lines = [];
    const data = [times];
    for (const s of series) {
      const byTime = new Map(s.points.map((p) => [p.t, p]));
      for (const q of ["p50", "p95"]) {
        lines.push(`${s.app} on ${s.model} ${q}`);
        const value = (t) => (byTime.has(t) && byTime.get(t)[`${metric}_${q}`] != null ? 1000 * byTime.get(t)[`${metric}_${q}`] : null);
        data.push(times.map(value));
      }
    }
    const shape = lines.join("|");
    const node = this.nodes[metric];
    if (this.plots[metric] && this.shapes[metric] === shape) {
      this.plots[metric].setData(data);
      return;
    }
    if (this.plots[metric]) this.plots[metric].destroy();
    this.shapes[metric] = shape;
    const yTicks = (u, splits) => {
      const labels = tickLabels(splits);
      node.dataset.yTicks = labels.join(" "); // what the axis shows, for the tests to read
      return labels;
    };
    this.plots[metric] = new uPlot(
      {
        width: 560,
        height: 260,
        cursor: { drag: { x: false, y: false } },
        // The x axis is always the last hour, so one early point is not stretched over years.
        scales: { x: { time: true, range: () => [Date.now() / 1000 - 3600, Date.now() / 1000 + 60] } },
        series: [{}, ...lines.map((label, i) => ({ label, stroke: COLORS[Math.floor(i / 2) % COLORS.length], dash: i % 2 ? [6, 4] : undefined, width: 2, points: { show: true }, value: (u, v) => (v == null ? "–" : `${v.toFixed(1)} ms`) }))],
        axes: [{}, { label: "milliseconds", incrs: STEPS, values: yTicks, size: 60 }],
      },
      data,
      node,
    );
  }
}
