// The training run the report belongs to: its loss curve (metrics.jsonl) and its recipe.

import { $, api, errorText, number, Refused, state } from "./core.js";

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attributes = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  return node;
}

function lossChart(series) {
  const [width, height, left, right, top, bottom] = [640, 280, 56, 16, 12, 36];
  const all = series.flatMap((s) => s.points);
  const steps = all.map((p) => p.step);
  const values = all.map((p) => p.value);
  const [x0, x1] = [Math.min(...steps), Math.max(...steps)];
  const [y0, y1] = [Math.min(0, ...values), Math.max(...values)];
  const x = (step) => left + ((step - x0) / (x1 - x0 || 1)) * (width - left - right);
  const y = (value) => top + (1 - (value - y0) / (y1 - y0 || 1)) * (height - top - bottom);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img" });
  chart.append(svg("line", { x1: left, y1: y(y0), x2: width - right, y2: y(y0), class: "axis" }));
  chart.append(svg("line", { x1: left, y1: top, x2: left, y2: y(y0), class: "axis" }));
  for (const tick of [y0, (y0 + y1) / 2, y1]) {
    chart.append(svg("text", { x: left - 6, y: y(tick) + 4, "text-anchor": "end" }, number(tick, 2)));
  }
  for (const tick of [x0, Math.round((x0 + x1) / 2), x1]) {
    chart.append(svg("text", { x: x(tick), y: height - bottom + 16, "text-anchor": "middle" }, String(tick)));
  }
  chart.append(svg("text", { x: (left + width) / 2, y: height - 4, "text-anchor": "middle" }, "step"));
  for (const { name, points } of series) {
    const path = points.map((p) => `${x(p.step).toFixed(1)},${y(p.value).toFixed(1)}`).join(" ");
    chart.append(svg("polyline", { points: path, class: `line ${name}` }));
  }
  return chart;
}

export async function loadRun() {
  state.run = "loading";
  $("#run-status").textContent = "Loading the run";
  let response;
  try {
    response = await api("/page/api/run");
  } catch (error) {
    state.run = null;
    if (error instanceof Refused) return;
    throw error;
  }
  if (!response.ok) {
    state.run = null; // asked again when the view is opened again
    $("#run-status").textContent = await errorText(response);
    return;
  }
  const run = (state.run = await response.json());
  $("#run-title").textContent = `Training run ${run.name}`;
  $("#run-status").textContent = run.folder;
  const series = ["loss", "eval_loss"]
    .map((name) => ({
      name,
      points: run.metrics
        .filter((row) => Number.isFinite(row.step) && Number.isFinite(row[name]))
        .map((row) => ({ step: row.step, value: row[name] })),
    }))
    .filter((s) => s.points.length);
  if (series.length) {
    const loss = series[0].points;
    const [first, last] = [loss[0], loss[loss.length - 1]];
    const words = `${series[0].name} ${number(first.value)} at step ${first.step}, ${number(last.value)} at step ${last.step}`;
    const chart = lossChart(series);
    chart.setAttribute("aria-label", `Training ${words}`);
    $("#loss-chart").replaceChildren(chart);
    $("#loss-caption").textContent = `${words}${series.length > 1 ? " (dashed: eval_loss)" : ""}`;
    $("#loss-figure").hidden = false;
  } else {
    $("#run-status").textContent += " · no loss logged yet (metrics.jsonl)";
  }
  $("#recipe").textContent = run.recipe ?? "(no recipe.yaml in the run folder)";
}
