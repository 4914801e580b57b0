// The compare page's entry: asks for the key when the gateway wants one, lists the served
// models, and switches between the views (#compare, #report, #run). Plain DOM, no build step.

import { buildColumns, buildModelPicker, initCompare } from "./compare.js";
import { $, api, askForKey, errorText, KEY_STORE, Refused, state } from "./core.js";
import { initReport, loadReport } from "./report.js";
import { loadRun } from "./run.js";

const VIEWS = ["compare", "report", "run"];
const MODE_SUFFIXES = [":thinking", ":chat"];

async function useKey(event) {
  event.preventDefault();
  state.key = $("#key-input").value.trim();
  sessionStorage.setItem(KEY_STORE, state.key);
  state.report = state.run = null;
  await loadModels();
}

async function loadModels() {
  let response;
  try {
    response = await api("/v1/models");
  } catch (error) {
    if (error instanceof Refused) return;
    throw error;
  }
  if (!response.ok) {
    askForKey(`The gateway answered ${response.status}: ${await errorText(response)}`);
    return;
  }
  const listed = (await response.json()).data.map((model) => model.id);
  state.models = listed.filter((id) => !MODE_SUFFIXES.some((suffix) => id.endsWith(suffix)));
  $("#key-form").hidden = true;
  $("#change-key").hidden = !state.key;
  buildModelPicker();
  buildColumns();
  showView(currentView());
  if (currentView() === "compare") $("#prompt").focus(); // ready to type, as a chat page is
}

// --- views -----------------------------------------------------------------------------
function currentView() {
  const view = location.hash.slice(1);
  return VIEWS.includes(view) ? view : "compare";
}

function showView(view, focus = false) {
  for (const name of VIEWS) $(`#view-${name}`).hidden = name !== view;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (view === "report" && !state.report) loadReport();
  if (view === "run" && !state.run) loadRun();
  if (focus) $(`#view-${view} h2`).focus();
}

// --- wiring ------------------------------------------------------------------------------
function start() {
  $("#key-form").addEventListener("submit", useKey);
  $("#change-key").addEventListener("click", () => askForKey(""));
  initCompare();
  initReport();
  window.addEventListener("hashchange", () => {
    if (state.models.length) showView(currentView(), true);
  });
  loadModels();
}

start();
