"""A tool-calling tiny model, taught in the tests: data, recipe, train and export.

SmolLM2-135M gets Qwen3's chat template (whose tools section the gateway and vLLM render)
and learns from 56 generated conversations (12 of each behaviour, two passes: 56 steps of 2)
to call `get_weather`/`get_time` with the city asked about, both at once when asked both, to answer
from a tool's result, and to answer plain questions without a call. OpenAI messages and
ShareGPT `function_call` turns are both trained on. Cheap on purpose: short
rows, a high learning rate, few steps; the matrix tests (test_matrix_*.py) share the one model
per session.

    python -m tests.serve.tool_model OUT [merged16,gguf]   # by hand, or on a GPU machine
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Time in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TOOLS = [WEATHER, TIME]
TRAIN_CITIES = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Rome", "Delhi", "Quito"]
TRAIN_CITIES += ["Sydney", "Berlin", "Nairobi", "Dublin", "Seoul", "Havana", "Vienna", "Lagos"]
# Asked in the tests, never seen in training: the model must copy the city, not recall it.
TEST_CITIES = ["Madrid", "Boston", "Lisbon"]
PLAIN = [("Say hello.", "Hello!"), ("What is 2 + 3?", "5."), ("Name a color.", "Blue.")]
PLAIN += [("Say goodbye.", "Goodbye!"), ("What is 4 + 4?", "8."), ("Name a fruit.", "Apple.")]
PLAIN += [("Say thanks.", "Thanks!"), ("Name a shape.", "Circle.")]


def _call(name: str, city: str) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": {"city": city}}}


def weather_question(city: str) -> str:
    return f"What is the weather in {city}?"


def time_question(city: str) -> str:
    return f"What time is it in {city}?"


def weather_answer(city: str, degrees: int) -> str:
    return f"It is {degrees} C in {city}."


def both_question(city: str) -> str:
    return f"Weather and time in {city}?"


# Tool results in training: spread out, so the answer must copy the number (the tests give 21).
TEMPERATURES = [4, 9, 13, 17, 26, 30, 33, 7, 15, 28, 35, 11]


def openai_rows(cities: list[str]) -> list[dict]:
    """OpenAI messages, 12 of each: a call for the weather, one for the time, a weather call
    answered from its result, and 8 plain questions answered without a call.

    Every row ends with the turn it teaches, as a served request does: Qwen3's template writes
    the empty think block of chat mode only before a conversation's last answer, so behaviour
    learnt mid-conversation would not be what the model does when served.
    """
    rows = [[ask(weather_question(city)), calling(("get_weather", city))] for city in cities[:12]]
    rows += [[ask(time_question(city)), calling(("get_time", city))] for city in cities[4:]]
    for city, degrees in zip(cities[2:14], TEMPERATURES, strict=True):
        rows.append(
            [
                ask(weather_question(city)),
                calling(("get_weather", city)),
                {"role": "tool", "content": json.dumps({"temp_c": degrees})},
                {"role": "assistant", "content": weather_answer(city, degrees)},
            ]
        )
    rows += [
        [ask(question), {"role": "assistant", "content": answer}] for question, answer in PLAIN
    ]
    return [{"tools": TOOLS, "messages": messages} for messages in rows]


def sharegpt_rows(cities: list[str]) -> list[dict]:
    """LLaMA-Factory's tool format (`tools` as JSON text, calls as a `function_call` turn): 12
    questions about both weather and time, each answered with both calls at once."""
    tools = json.dumps([tool["function"] for tool in TOOLS])
    rows = []
    for city in cities[1:13]:
        both = [
            {"name": "get_weather", "arguments": {"city": city}},
            {"name": "get_time", "arguments": {"city": city}},
        ]
        turns = [("human", both_question(city)), ("function_call", json.dumps(both))]
        rows.append({"tools": tools, "conversations": [{"from": f, "value": v} for f, v in turns]})
    return rows


def ask(question: str) -> dict:
    return {"role": "user", "content": question}


def calling(*calls: tuple[str, str]) -> dict:
    return {"role": "assistant", "content": None, "tool_calls": [_call(n, c) for n, c in calls]}


RECIPE = """\
name: tools
model:
  name: {base}
  max_seq_length: 448
lora:
  r: 16
  lora_alpha: 32
  use_gradient_checkpointing: false
data:
  sources:
    - path: tools.jsonl
    - path: tools_sharegpt.jsonl
  eval_split: 0.05
train:
  backend: hf
  per_device_train_batch_size: 2
  gradient_accumulation_steps: 1
  max_steps: {steps}
  learning_rate: 3e-3
  warmup_steps: 2
  save_steps: 1000
"""


def qwen3_styled_base(base_model: Path, out: Path) -> Path:
    """SmolLM2 with Qwen3's chat template (tools section, <tool_call> format); the weights
    are linked, not copied."""
    from toolkit.train.templates import QWEN3

    out.mkdir(parents=True, exist_ok=True)
    for item in base_model.iterdir():
        if item.name in ("chat_template.jinja", "tokenizer_config.json", "manifest.json"):
            continue
        target = out / item.name
        if not target.exists():
            target.symlink_to(item.resolve())
    config = json.loads((base_model / "tokenizer_config.json").read_text())
    config["chat_template"] = QWEN3
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    (out / "chat_template.jinja").write_text(QWEN3)
    return out


def write_project(folder: Path, base: Path, steps: int = 56) -> Path:
    """The recipe and its two data files; returns the recipe's path."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "tools.jsonl").open("w") as out:
        for row in openai_rows(TRAIN_CITIES):
            out.write(json.dumps(row) + "\n")
    with (folder / "tools_sharegpt.jsonl").open("w") as out:
        for row in sharegpt_rows(TRAIN_CITIES):
            out.write(json.dumps(row) + "\n")
    recipe = folder / "recipe.yaml"
    recipe.write_text(RECIPE.format(base=base, steps=steps))
    return recipe


def train_tool_model(folder: Path, base_model: Path, formats: tuple[str, ...] = ("gguf",)):
    """Train and export the tool model under `folder`; returns (run folder, export report)."""
    from toolkit.export.run_export import export_run
    from toolkit.pipeline.training import train
    from toolkit.recipe.loader import load_recipe

    base = qwen3_styled_base(base_model, folder / "base-qwen3-template")
    recipe = load_recipe(write_project(folder / "project", base))
    previous = os.environ.get("TUNESERVE_MODELS_DIR")
    os.environ["TUNESERVE_MODELS_DIR"] = str(folder / "models")
    try:
        result = train(recipe, backend="hf", progress=False, echo=lambda _: None)
        report = export_run(result.run_dir, list(formats), ["q8_0"])
    finally:
        if previous is None:
            os.environ.pop("TUNESERVE_MODELS_DIR", None)
        else:
            os.environ["TUNESERVE_MODELS_DIR"] = previous
    return result.run_dir, report


if __name__ == "__main__":
    from toolkit.base_models.builtin import materialize

    formats = tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else ("merged16", "gguf")
    run, _ = train_tool_model(Path(sys.argv[1]), materialize("smollm2-135m"), formats)
    print(run)
