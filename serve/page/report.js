// The eval report: each suite's scores with their intervals and the paired test, and the items
// that flipped between the baseline and another model, filterable by suite and scorer.

import { $, api, el, errorText, number, Refused, signed, state } from "./core.js";

export async function loadReport() {
  state.report = "loading";
  $("#report-status").textContent = "Loading the report";
  let response;
  try {
    response = await api("/page/api/report");
  } catch (error) {
    state.report = null;
    if (error instanceof Refused) return;
    throw error;
  }
  if (!response.ok) {
    state.report = null; // asked again when the view is opened again
    $("#report-status").textContent = await errorText(response);
    return;
  }
  state.report = await response.json();
  const meta = state.report.meta || {};
  $("#report-status").textContent =
    `Models ${(meta.models || []).join(", ")} · seed ${meta.seed} · max_tokens ${meta.max_tokens}` +
    ` · asked at ${meta.base_url}`;
  renderSuites(state.report);
  buildFlipFilters(state.report);
  renderFlips();
}

function scoreBar(row) {
  const bar = el("span", { class: "bar", "aria-hidden": "true" });
  const fill = el("span", { class: "fill" });
  const interval = el("span", { class: "interval" });
  fill.style.width = `${Math.max(0, Math.min(1, row.score)) * 100}%`;
  interval.style.left = `${Math.max(0, row.ci[0]) * 100}%`;
  interval.style.width = `${Math.max(0, Math.min(1, row.ci[1]) - Math.max(0, row.ci[0])) * 100}%`;
  bar.append(fill, interval);
  return bar;
}

const KNOWN_PAIR_KEYS = new Set(["suite", "baseline", "model", "delta", "delta_ci", "p_value", "test"]);
const COUNT_KEYS = new Set(["wins", "losses", "ties"]);

function comparisonLine(pair) {
  const significant = pair.p_value < 0.05 ? "significant" : "not significant";
  const parts = [
    `${pair.model} − ${pair.baseline}: ${signed(pair.delta)}`,
    `95% CI [${signed(pair.delta_ci[0])}, ${signed(pair.delta_ci[1])}]`,
    `p = ${Number(pair.p_value).toPrecision(3)} (${pair.test}, ${significant})`,
    `wins ${pair.wins} / losses ${pair.losses} / ties ${pair.ties}`,
  ];
  // Figures added to the report later (e.g. a non-inferiority check) show up as they are.
  for (const [name, value] of Object.entries(pair)) {
    if (KNOWN_PAIR_KEYS.has(name) || COUNT_KEYS.has(name) || typeof value === "object") continue;
    parts.push(`${name.replaceAll("_", " ")} ${typeof value === "number" ? number(value) : value}`);
  }
  return el("p", { class: "comparison" }, parts.join(" · "));
}

function renderSuites(report) {
  const root = $("#report-summary");
  root.replaceChildren();
  const suites = [...new Set(report.models.map((row) => row.suite))];
  for (const suite of suites) {
    const body = el("tbody");
    for (const row of report.models.filter((r) => r.suite === suite)) {
      const extra = Object.entries(row.extra || {}).map(([k, v]) => `${k} ${number(v)}`);
      body.append(
        el(
          "tr",
          {},
          el("th", { scope: "row" }, row.model),
          el("td", {}, String(row.n)),
          el("td", { class: "score" }, scoreBar(row), ` ${number(row.score)}`),
          el("td", {}, `[${number(row.ci[0])}, ${number(row.ci[1])}]`),
          el("td", {}, extra.join(", ") || "–"),
          el("td", {}, String(row.errors)),
        ),
      );
    }
    const head = el("tr", {}, ...["model", "n", "score", "95% CI", "also", "errors"].map((h) => el("th", { scope: "col" }, h)));
    const table = el("table", {}, el("thead", {}, head), body);
    const pairs = report.comparisons.filter((pair) => pair.suite === suite).map(comparisonLine);
    root.append(el("section", { class: "suite panel" }, el("h3", {}, suite), el("div", { class: "scroll" }, table), ...pairs));
  }
}

function fillSelect(select, options) {
  select.replaceChildren(...options.map(([value, label]) => el("option", { value }, label)));
}

function buildFlipFilters(report) {
  const [baseline, ...others] = report.meta.models;
  fillSelect($("#flip-model"), others.map((model) => [model, `${baseline} → ${model}`]));
  $("#flip-model").value = others[others.length - 1] || "";
  const items = report.items || [];
  const suites = [...new Set(items.map((item) => item.suite))];
  const scorers = [...new Set(items.map((item) => item.scorer))];
  fillSelect($("#flip-suite"), [["", "every suite"], ...suites.map((s) => [s, s])]);
  fillSelect($("#flip-scorer"), [["", "every scorer"], ...scorers.map((s) => [s, s])]);
}

function flippedItems(report, model) {
  const baseline = report.meta.models[0];
  const flips = [];
  for (const item of report.items || []) {
    const before = item.answers[baseline];
    const after = item.answers[model];
    if (!before || !after || before.score === after.score) continue;
    flips.push({ item, before, after, direction: after.score > before.score ? "gained" : "lost" });
  }
  return flips;
}

function lastUserText(messages) {
  const users = messages.filter((message) => message.role === "user");
  return users.length ? users[users.length - 1].content : "";
}

function answerCell(title, text, kind) {
  return el("div", { class: `cell ${kind}` }, el("h4", {}, title), el("pre", {}, text));
}

function flipCard({ item, before, after, direction }, baseline, model) {
  const expected = typeof item.expected === "string" ? item.expected : JSON.stringify(item.expected);
  const shown = (answer) => (answer.error ? `error: ${answer.error}` : answer.output);
  return el(
    "li",
    { class: "flip", "data-direction": direction, "data-suite": item.suite, "data-item": item.id },
    el(
      "header",
      {},
      el("span", { class: `badge ${direction}` }, direction === "lost" ? "lost" : "gained"),
      ` ${item.suite} · ${item.id} · scorer ${item.scorer}`,
    ),
    el("p", { class: "prompt" }, lastUserText(item.messages)),
    el(
      "div",
      { class: "cells" },
      answerCell("expected", expected, "expected"),
      answerCell(`${baseline} · score ${number(before.score, 2)}`, shown(before), "before"),
      answerCell(`${model} · score ${number(after.score, 2)}`, shown(after), "after"),
    ),
  );
}

export function renderFlips() {
  const report = state.report;
  if (!report || report === "loading") return;
  const list = $("#flips");
  list.replaceChildren();
  if (!report.items) {
    $("#flip-count").textContent =
      "This report has no per-item answers (written by an older tuneserve): run the eval again " +
      "with the same --report folder (cached answers are reused) to see them.";
    return;
  }
  const model = $("#flip-model").value;
  const all = flippedItems(report, model);
  const suite = $("#flip-suite").value;
  const scorer = $("#flip-scorer").value;
  const direction = $("#flip-direction").value;
  const shown = all.filter(
    (flip) =>
      (!suite || flip.item.suite === suite) &&
      (!scorer || flip.item.scorer === scorer) &&
      (direction === "all" || flip.direction === direction),
  );
  const lost = all.filter((flip) => flip.direction === "lost").length;
  $("#flip-count").textContent =
    `${shown.length} shown of ${all.length} flipped items (${lost} lost, ${all.length - lost} gained)` +
    ` out of ${report.items.length} items`;
  const baseline = report.meta.models[0];
  list.append(...shown.map((flip) => flipCard(flip, baseline, model)));
}

export function initReport() {
  for (const id of ["#flip-model", "#flip-direction", "#flip-suite", "#flip-scorer"]) {
    $(id).addEventListener("change", renderFlips);
  }
}
