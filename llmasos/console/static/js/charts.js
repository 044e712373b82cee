// Latency charts with uPlot (vendored: vendor/uplot, see VERSION there): one line per model/app
// and quantile, points per minute of the last hour.

const COLORS = ["#2f5bea", "#e04f39", "#12b76a", "#f79009", "#7a5af8", "#06aed4", "#dd2590", "#667085"];

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
        data.push(times.map((t) => (byTime.has(t) ? byTime.get(t)[`${metric}_${q}`] : null)));
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
    this.plots[metric] = new uPlot(
      {
        width: 560,
        height: 260,
        // The x axis is always the last hour, so one early point is not stretched over years.
        scales: { x: { time: true, range: () => [Date.now() / 1000 - 3600, Date.now() / 1000 + 60] } },
        series: [{}, ...lines.map((label, i) => ({ label, stroke: COLORS[Math.floor(i / 2) % COLORS.length], dash: i % 2 ? [6, 4] : undefined, width: 2, points: { show: true } }))],
        axes: [{}, { label: "seconds" }],
      },
      data,
      node,
    );
  }
}
