// The rate graph: session download and upload rates over the last few minutes, drawn on
// a canvas from the samples the page already polls (session-stats), so it costs the
// daemon nothing extra. Samples live in the page only: a reload starts a new graph, which
// spans the time since the first sample (at least MIN_SPAN_S) until the window is full.

const MIN_SPAN_S = 20;

import * as fmt from "./format.js";

export class RateGraph {
  constructor(canvas, windowS = 300) {
    this.canvas = canvas;
    this.windowS = windowS;
    this.samples = []; // {t (ms), down, up}
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  add(down, up, now = Date.now()) {
    this.samples.push({ t: now, down, up });
    const cutoff = now - this.windowS * 1000;
    while (this.samples.length && this.samples[0].t < cutoff) this.samples.shift();
    this.draw(now);
  }

  draw(now = Date.now()) {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.floor(canvas.clientWidth * ratio));
    const h = Math.max(1, Math.floor(canvas.clientHeight * ratio));
    if (canvas.width !== w) canvas.width = w;
    if (canvas.height !== h) canvas.height = h;
    const ctx = canvas.getContext("2d");
    const style = getComputedStyle(canvas);
    ctx.clearRect(0, 0, w, h);
    const top = Math.max(1, ...this.samples.map((s) => Math.max(s.down, s.up)));
    // Round the scale up to 1, 2 or 5 × 10^n so the label reads well.
    const power = 10 ** Math.floor(Math.log10(top));
    const scale = [1, 2, 5, 10].map((m) => m * power).find((v) => v >= top);
    const first = this.samples.length ? this.samples[0].t : now;
    const spanS = Math.min(this.windowS, Math.max(MIN_SPAN_S, (now - first) / 1000));
    const x = (t) => w - ((now - t) / (spanS * 1000)) * w;
    const y = (v) => h - (v / scale) * (h - 14 * ratio) - 1;
    ctx.strokeStyle = style.getPropertyValue("--grid").trim() || "#ccc";
    ctx.lineWidth = 1;
    for (let i = 1; i < 4; i++) {
      ctx.beginPath();
      ctx.moveTo(0, Math.round((h * i) / 4) + 0.5);
      ctx.lineTo(w, Math.round((h * i) / 4) + 0.5);
      ctx.stroke();
    }
    for (const [key, name] of [
      ["down", "--down"],
      ["up", "--up"],
    ]) {
      if (this.samples.length < 2) break;
      ctx.strokeStyle = style.getPropertyValue(name).trim() || "#000";
      ctx.lineWidth = 1.5 * ratio;
      ctx.beginPath();
      this.samples.forEach((s, i) => (i ? ctx.lineTo(x(s.t), y(s[key])) : ctx.moveTo(x(s.t), y(s[key]))));
      ctx.stroke();
    }
    ctx.fillStyle = style.getPropertyValue("color");
    ctx.font = `${11 * ratio}px system-ui, sans-serif`;
    const span = spanS >= 60 ? `${Math.round(spanS / 60)} min` : `${Math.round(spanS)} s`;
    ctx.fillText(`scale ${fmt.rate(scale)} · last ${span}`, 4 * ratio, 12 * ratio);
  }
}
