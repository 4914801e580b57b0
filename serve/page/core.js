// Shared by the page's modules: its state, DOM helpers, and the API behind the gateway's key.

export const KEY_STORE = "tuneserve-api-key";
export const state = {
  key: sessionStorage.getItem(KEY_STORE) || "",
  models: [],
  columns: new Map(), // model name -> {name, history, article, turns, sampling, lastRequest}
  running: new Set(), // AbortControllers of the streams in flight
  report: null,
  run: null,
};

export const $ = (selector) => document.querySelector(selector);

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

export function button(label, onClick, attributes = {}) {
  const node = el("button", { type: "button", ...attributes }, label);
  node.addEventListener("click", onClick);
  return node;
}

// --- the key and the API ---------------------------------------------------------------
export class Refused extends Error {}

export async function errorText(response) {
  try {
    const body = await response.json();
    return body.error?.message || `${response.status} ${response.statusText}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

export async function api(path, init = {}) {
  const headers = new Headers(init.headers || {});
  if (state.key) headers.set("Authorization", `Bearer ${state.key}`);
  const response = await fetch(path, { ...init, headers });
  if (response.status === 401) {
    const why = await errorText(response);
    askForKey(state.key ? `Refused: the gateway did not accept this key (401: ${why}).` : "");
    throw new Refused(why);
  }
  return response;
}

export function askForKey(message) {
  for (const view of document.querySelectorAll(".view")) view.hidden = true;
  $("#key-form").hidden = false;
  $("#key-message").textContent = message;
  $("#key-input").value = "";
  $("#key-input").focus();
}

export function number(value, digits = 3) {
  return Number.isFinite(value) ? value.toFixed(digits) : "n/a";
}

export function signed(value) {
  return Number.isFinite(value) ? `${value >= 0 ? "+" : ""}${value.toFixed(3)}` : "n/a";
}
