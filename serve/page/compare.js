// The compare chat: one prompt to every served model, streamed side by side, each model keeping
// its own conversation; the sampling each answer was made with; the request as curl or openai.

import { $, api, button, el, state } from "./core.js";

export function buildModelPicker() {
  const picker = $("#model-picker");
  picker.replaceChildren(el("legend", {}, "Models"));
  for (const name of state.models) {
    const box = el("input", { type: "checkbox", value: name, checked: "" });
    box.addEventListener("change", () => {
      state.columns.get(name).article.hidden = !box.checked;
    });
    picker.append(el("label", {}, box, ` ${name}`));
  }
}

export function buildColumns() {
  const root = $("#columns");
  root.replaceChildren();
  state.columns.clear();
  for (const name of state.models) {
    const column = { name, history: [], lastRequest: null };
    column.sampling = el("p", { class: "sampling" }, "nothing sent yet");
    column.turns = el("ol", { class: "turns" });
    const actions = el(
      "div",
      { class: "row" },
      button("Copy as curl", () => showSnippet(column, "curl")),
      button("Copy as openai", () => showSnippet(column, "openai")),
    );
    column.article = el(
      "article",
      { class: "column", "data-model": name, "aria-label": name },
      el("header", {}, el("h3", {}, name), column.sampling, actions),
      column.turns,
    );
    root.append(column.article);
    state.columns.set(name, column);
  }
}

function selectedMode() {
  return document.querySelector("input[name=mode]:checked").value;
}

function requestBody(column, prompt) {
  const body = {
    model: column.name,
    messages: [...column.history, { role: "user", content: prompt }],
    max_tokens: Number($("#max-tokens").value) || 256,
  };
  const mode = selectedMode();
  if (mode !== "auto") body.chat_template_kwargs = { enable_thinking: mode === "thinking" };
  return body;
}

function newTurn(column, prompt) {
  const thinkingText = el("div", { class: "thinking-text" });
  const summary = el("summary", {}, "Thinking");
  const thinking = el("details", { class: "thinking", hidden: "" }, summary, thinkingText);
  const answer = el("div", { class: "answer" });
  const status = el("p", { class: "status" }, "waiting for the first token");
  const item = el(
    "li",
    { class: "turn" },
    el("p", { class: "user" }, prompt),
    el("div", { class: "assistant" }, thinking, answer, status),
  );
  column.turns.append(item);
  return { thinking, summary, thinkingText, answer, status };
}

async function* sseEvents(stream) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).trim();
      buffer = buffer.slice(end + 1);
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

function seconds(started) {
  return ((performance.now() - started) / 1000).toFixed(1);
}

async function streamTurn(column, prompt) {
  const body = requestBody(column, prompt);
  column.lastRequest = body;
  const turn = newTurn(column, prompt);
  const controller = new AbortController();
  state.running.add(controller);
  const started = performance.now();
  let answer = "";
  let reasoning = "";
  let chunks = 0;
  const article = column.article;
  article.dataset.state = "streaming";
  article.dataset.chunks = "0";
  try {
    const response = await api("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...body, stream: true }),
      signal: controller.signal,
    });
    const mode = response.headers.get("x-tuneserve-mode");
    const sampling = response.headers.get("x-tuneserve-sampling");
    if (mode) column.sampling.textContent = `${mode} mode · ${sampling}`;
    if (!response.ok) throw new Error(await errorText(response));
    for await (const event of sseEvents(response.body)) {
      if (event.error) throw new Error(event.error.message || "the stream failed");
      const delta = event.choices?.[0]?.delta || {};
      const thought = delta.reasoning_content ?? delta.reasoning;
      if (thought) {
        reasoning += thought;
        turn.thinkingText.textContent = reasoning;
        turn.summary.textContent = `Thinking (${reasoning.length} characters)`;
        turn.thinking.hidden = false;
      }
      if (delta.content) {
        answer += delta.content;
        turn.answer.textContent = answer;
      }
      if (thought || delta.content) article.dataset.chunks = String(++chunks);
    }
    turn.status.textContent = `${mode} mode · ${seconds(started)} s · ${chunks} chunks`;
    article.dataset.state = "done";
  } catch (error) {
    const stopped = error.name === "AbortError";
    turn.status.textContent = stopped ? `stopped after ${seconds(started)} s` : `error: ${error.message}`;
    turn.status.classList.toggle("refused", !stopped);
    article.dataset.state = stopped ? "stopped" : "error";
    if (!stopped) return;
  } finally {
    state.running.delete(controller);
  }
  column.history.push({ role: "user", content: prompt }, { role: "assistant", content: answer });
}

export async function send(event) {
  event.preventDefault();
  const prompt = $("#prompt").value.trim();
  const chosen = [...state.columns.values()].filter((column) => !column.article.hidden);
  if (!prompt || !chosen.length || state.running.size) return;
  $("#prompt").value = "";
  $("#send").disabled = true;
  $("#stop").disabled = false;
  await Promise.all(chosen.map((column) => streamTurn(column, prompt)));
  $("#send").disabled = false;
  $("#stop").disabled = true;
  $("#prompt").focus();
}

export function stopAll() {
  for (const controller of state.running) controller.abort();
}

export function newConversation() {
  stopAll();
  for (const column of state.columns.values()) {
    column.history = [];
    column.lastRequest = null;
    column.turns.replaceChildren();
  }
  $("#prompt").focus();
}

export function onPromptKey(event) {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("#chat-form").requestSubmit();
  } else if (event.key === "Escape") {
    stopAll();
  }
}

// --- snippets: the same request from a terminal or from Python -------------------------
function py(value, depth = 0) {
  if (value === null) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (Array.isArray(value)) {
    const pad = "    ".repeat(depth + 2);
    const items = value.map((item) => `${pad}${py(item, depth + 1)},\n`).join("");
    return value.length ? `[\n${items}${"    ".repeat(depth + 1)}]` : "[]";
  }
  if (typeof value === "object") {
    const pairs = Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${py(v, depth)}`);
    return `{${pairs.join(", ")}}`;
  }
  return JSON.stringify(value);
}

function snippet(column, kind) {
  const prompt = $("#prompt").value.trim() || "Hello!";
  const body = column.lastRequest || requestBody(column, prompt);
  const base = `${location.origin}/v1`;
  if (kind === "curl") {
    const lines = [`curl ${base}/chat/completions`, "  -H 'Content-Type: application/json'"];
    if (state.key) lines.push('  -H "Authorization: Bearer $TUNESERVE_API_KEY"');
    lines.push(`  -d '${JSON.stringify(body).replaceAll("'", "'\\''")}'`);
    return lines.join(" \\\n");
  }
  const { model, messages, chat_template_kwargs: kwargs, ...rest } = body;
  const key = state.key ? 'os.environ["TUNESERVE_API_KEY"]' : '"none"';
  const lines = state.key ? ["import os", ""] : [];
  lines.push("from openai import OpenAI", "");
  lines.push(`client = OpenAI(base_url=${py(base)}, api_key=${key})`);
  lines.push("reply = client.chat.completions.create(", `    model=${py(model)},`);
  lines.push(`    messages=${py(messages)},`);
  for (const [name, value] of Object.entries(rest)) lines.push(`    ${name}=${py(value)},`);
  if (kwargs) lines.push(`    extra_body={"chat_template_kwargs": ${py(kwargs)}},`);
  lines.push(")", "print(reply.choices[0].message.content)");
  return lines.join("\n");
}

function showSnippet(column, kind) {
  $("#snippet-title").textContent = `${column.name}: ${kind === "curl" ? "curl" : "openai (Python)"}`;
  $("#snippet-text").value = snippet(column, kind);
  $("#snippet-status").textContent = "";
  $("#snippet-dialog").showModal();
  $("#snippet-text").select();
}

export async function copySnippet() {
  const text = $("#snippet-text");
  try {
    await navigator.clipboard.writeText(text.value);
  } catch {
    text.select(); // no clipboard API off a secure origin: the older command still works
    document.execCommand("copy");
  }
  $("#snippet-status").textContent = "Copied";
}


export function initCompare() {
  $("#chat-form").addEventListener("submit", send);
  $("#prompt").addEventListener("keydown", onPromptKey);
  $("#stop").addEventListener("click", stopAll);
  $("#new-chat").addEventListener("click", newConversation);
  $("#snippet-copy").addEventListener("click", copySnippet);
  $("#snippet-close").addEventListener("click", () => $("#snippet-dialog").close());
}
