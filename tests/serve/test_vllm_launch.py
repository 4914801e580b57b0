"""`tuneserve serve --engine vllm` end to end on CPU, with a stand-in `vllm` on PATH: adapters
served unmerged (one engine, one route per adapter), GPU memory shared by models side by side,
and --engine-arg passed through. The stand-in records its argv and answers like vLLM would
(the model it was asked for); the real vLLM runs this same path in test_vllm_gpu.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import openai
import pytest

from serve.launcher import serve_models
from tests.command_standin import put_on_path
from tests.serve.test_engines import SNAPSHOT
from toolkit.core.errors import TuneserveError
from toolkit.core.tool_prompt import tool_prompt
from toolkit.train.templates import CHATML, QWEN3

FAKE_VLLM = """#!{python}
import json, os, sys
from pathlib import Path
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

import time
argv = sys.argv[1:]
Path(os.environ["FAKE_VLLM_LOG"], f"{{os.getpid()}}.json").write_text(json.dumps(argv))
port = int(argv[argv.index("--port") + 1])
started = time.time()
time.sleep(float(os.environ.get("FAKE_VLLM_LOAD_S", "0")))  # loading weights, profiling
Path(os.environ["FAKE_VLLM_LOG"], f"{{os.getpid()}}.times").write_text(
    json.dumps({{"started": started, "loaded": time.time()}}))

async def chat(request):
    body = await request.json()
    with open(os.path.join(os.environ["FAKE_VLLM_LOG"], "bodies.jsonl"), "a") as out:
        out.write(json.dumps(body) + "\\n")
    text = "model=" + body["model"]
    message = {{"role": "assistant", "content": text}}
    return JSONResponse({{"id": "c", "object": "chat.completion", "created": 1,
        "model": body["model"], "choices": [{{"index": 0, "message": message,
        "finish_reason": "stop"}}], "usage": {{"prompt_tokens": 1, "completion_tokens": 1,
        "total_tokens": 2}}}})

async def health(request):
    return JSONResponse({{}})

async def embeddings(request):
    body = await request.json()
    data = [{{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}}]
    return JSONResponse({{"object": "list", "data": data, "model": body["model"],
        "usage": {{"prompt_tokens": 1, "total_tokens": 1}}}})

app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                        Route("/v1/embeddings", embeddings, methods=["POST"]),
                        Route("/health", health)])

# As vLLM 0.26 does: `args.api_key or [envs.VLLM_API_KEY]`, then every /v1 path needs the key.
token = os.environ.get("VLLM_API_KEY")

async def guarded(scope, receive, send):
    if scope["type"] == "http" and token and scope["path"].startswith("/v1"):
        given = dict(scope["headers"]).get(b"authorization", b"").decode()
        if given != "Bearer " + token:
            await JSONResponse({{"error": "Unauthorized"}}, status_code=401)(scope, receive, send)
            return
    await app(scope, receive, send)

uvicorn.run(guarded, host="127.0.0.1", port=port, log_level="warning")
"""


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch) -> Path:
    """A `vllm` on PATH; returns the folder where each launch leaves its argv."""
    return put_on_path(
        tmp_path, monkeypatch, "vllm", FAKE_VLLM.format(python=sys.executable), keep_path=False
    )


def _launches(log: Path) -> list[list[str]]:
    return [json.loads(path.read_text()) for path in sorted(log.glob("*.json"))]


def _folder(tmp_path: Path, name: str, template: str = QWEN3) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    return folder


def _bodies(log: Path) -> list[dict]:
    """The chat bodies the stand-in vLLM received, in order."""
    path = log / "bodies.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _adapter(tmp_path: Path, name: str, rank: int = 16, base: Path | None = None) -> Path:
    adapter = tmp_path / name
    adapter.mkdir()
    config = {"r": rank, "base_model_name_or_path": str(base or "Qwen/Qwen3-0.6B")}
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    return adapter


def _value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def _answer(served, model: str) -> str:
    client = openai.OpenAI(base_url=served.base_url, api_key="none", max_retries=0)
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}]
    )
    return reply.choices[0].message.content


def test_adapters_are_served_unmerged_by_the_one_base_engine(tmp_path, fake_vllm):
    base = _folder(tmp_path, "base")
    first, second = _adapter(tmp_path, "a1", 16), _adapter(tmp_path, "a2", 64)
    with serve_models(
        [f"base={base}"],
        engine="vllm",
        lora=[f"tuned={first}", f"other={second}"],
        log_dir=tmp_path / "logs",
    ) as served:
        assert served.names == ["base", "tuned", "other"]
        client = openai.OpenAI(base_url=served.base_url, api_key="none", max_retries=0)
        listed = {model.id for model in client.models.list()}
        assert {"base", "tuned", "other", "tuned:thinking", "other:chat"} <= listed
        # vLLM picks the adapter by the name in `model`: each route forwards its own name
        assert _answer(served, "tuned") == "model=tuned"
        assert _answer(served, "other:chat") == "model=other"
        assert _answer(served, "base") == "model=base"
    [argv] = _launches(fake_vllm)  # one engine carries both adapters
    assert argv[:2] == ["serve", str(base.resolve())]
    modules = argv[argv.index("--lora-modules") + 1 :][:2]
    assert modules == [f"tuned={first.resolve()}", f"other={second.resolve()}"]
    assert "--enable-lora" in argv and _value(argv, "--max-lora-rank") == "64"
    assert not [flag for flag in argv if flag.startswith("-") and flag not in SNAPSHOT["options"]]


def test_models_side_by_side_share_the_gpu_memory_and_take_engine_args(
    tmp_path, fake_vllm, monkeypatch
):
    monkeypatch.setenv("FAKE_VLLM_LOAD_S", "1")
    one, two = _folder(tmp_path, "one"), _folder(tmp_path, "two")
    with serve_models(
        [str(one), str(two)],
        engine="vllm",
        engine_args=["--enable-log-requests", "--max-num-seqs", "64"],
        log_dir=tmp_path / "logs",
    ) as served:
        assert _answer(served, "two") == "model=two"
    launches = _launches(fake_vllm)
    assert len(launches) == 2
    for argv in launches:
        assert _value(argv, "--gpu-memory-utilization") == "0.45"  # 0.9 between two models
        assert argv[-3:] == ["--enable-log-requests", "--max-num-seqs", "64"]
    # One after the other: a vLLM engine sizes its KV cache from the GPU memory it sees free
    # while it profiles, so a neighbour loading at the same time would starve it.
    first, second = _load_times(fake_vllm)
    assert second["started"] >= first["loaded"]


def test_replicas_on_their_own_gpus_load_side_by_side(tmp_path, fake_vllm, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_LOAD_S", "1")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with serve_models(
        [str(_folder(tmp_path, "one"))], engine="vllm", replicas=2, gpus=1, log_dir=tmp_path / "l"
    ) as served:
        assert _answer(served, "one") == "model=one"
    first, second = _load_times(fake_vllm)
    assert second["started"] < first["loaded"]  # GPUs 0 and 1: nothing to wait for


def _load_times(log: Path) -> list[dict[str, float]]:
    """When each stand-in engine started and finished loading, in start order."""
    times = [json.loads(path.read_text()) for path in log.glob("*.times")]
    return sorted(times, key=lambda entry: entry["started"])


def test_one_model_alone_gets_the_usual_gpu_share(tmp_path, fake_vllm):
    with serve_models([str(_folder(tmp_path, "solo"))], engine="vllm", log_dir=tmp_path / "l"):
        pass
    [argv] = _launches(fake_vllm)
    assert _value(argv, "--gpu-memory-utilization") == "0.9"


@pytest.mark.parametrize(
    ("lora", "match"),
    [
        (["tuned"], "is not NAME=PATH"),
        (["tuned:chat=x"], "is not NAME=PATH"),
        (["tuned=/nonexistent/adapter"], "not a LoRA adapter folder"),
    ],
)
def test_bad_lora_arguments_are_clear_errors(tmp_path, fake_vllm, lora, match):
    with (
        pytest.raises(TuneserveError, match=match),
        serve_models([str(_folder(tmp_path, "base"))], engine="vllm", lora=lora),
    ):
        pass
    assert not _launches(fake_vllm)


def test_among_several_models_an_adapter_rides_on_the_base_it_names(tmp_path, fake_vllm):
    base, merged = _folder(tmp_path, "base"), _folder(tmp_path, "merged16")
    adapter = _adapter(tmp_path, "adapter", base=base)
    with serve_models(
        [f"tuned={merged}", f"base={base}"],
        engine="vllm",
        lora=[f"tuned-lora={adapter}"],
        log_dir=tmp_path / "logs",
    ) as served:
        assert served.names == ["tuned", "base", "tuned-lora"]
        assert _answer(served, "tuned-lora") == "model=tuned-lora"
    by_model = {argv[1]: argv for argv in _launches(fake_vllm)}
    assert "--lora-modules" not in by_model[str(merged.resolve())]
    lora = by_model[str(base.resolve())]
    assert lora[lora.index("--lora-modules") + 1] == f"tuned-lora={adapter.resolve()}"


def test_lora_needs_a_base_it_can_find_and_vllm(tmp_path, fake_vllm, base_gguf):
    adapter = f"tuned={_adapter(tmp_path, 'a')}"
    two = [str(_folder(tmp_path, "x")), str(_folder(tmp_path, "y"))]
    with (
        pytest.raises(TuneserveError, match="cannot tell which served model is its base"),
        serve_models(two, engine="vllm", lora=[adapter]),
    ):
        pass
    with (
        pytest.raises(TuneserveError, match="llama.cpp serves LoRA adapters as GGUF files"),
        serve_models([str(base_gguf)], lora=[adapter], log_dir=tmp_path / "logs"),
    ):
        pass
    assert not _launches(fake_vllm)


TOOL = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
HISTORY = [
    {"role": "user", "content": "Time?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
        ],
    },
    {"role": "tool", "tool_call_id": "c", "content": "noon"},
]


def test_vllm_parses_tool_calls_itself(tmp_path, fake_vllm):
    qwen, chatml = _folder(tmp_path, "qwen"), _folder(tmp_path, "chatml", CHATML)
    with serve_models(
        [f"qwen={qwen}", f"chatml={chatml}"], engine="vllm", ctx=8192, log_dir=tmp_path / "l"
    ) as served:
        client = openai.OpenAI(base_url=served.base_url, api_key="none", max_retries=0)
        for model in ("qwen", "chatml"):
            client.chat.completions.create(
                model=model, messages=HISTORY, tools=[TOOL], tool_choice="required"
            )
    for argv in _launches(fake_vllm):
        assert (
            "--enable-auto-tool-choice" in argv and _value(argv, "--tool-call-parser") == "hermes"
        )
        assert _value(argv, "--max-model-len") == "8192"
    qwen_body, chatml_body = _bodies(fake_vllm)
    # its template renders tools: vLLM gets the request as the client sent it
    assert qwen_body["messages"] == HISTORY and qwen_body["tools"] == [TOOL]
    assert qwen_body["tool_choice"] == "required"
    # a template without tools: the tool prompt and the history as text, vLLM still enforces
    assert chatml_body["messages"][0] == {"role": "system", "content": tool_prompt([TOOL])}
    assert [m["role"] for m in chatml_body["messages"]] == ["system", "user", "assistant", "user"]
    assert chatml_body["tools"] == [TOOL] and chatml_body["tool_choice"] == "required"


def test_an_embeddings_model_runs_vllms_pooling_runner(tmp_path, fake_vllm):
    chat, embed = _folder(tmp_path, "chat"), _folder(tmp_path, "embed")
    with serve_models(
        [f"chat={chat}"], embeddings=[f"embed={embed}"], engine="vllm", log_dir=tmp_path / "l"
    ) as served:
        client = openai.OpenAI(base_url=served.base_url, api_key="none", max_retries=0)
        listed = {model.id for model in client.models.list()}
        assert "embed" in listed and "embed:chat" not in listed
        vectors = client.embeddings.create(model="embed", input=["a"]).data
        assert vectors[0].embedding == [0.5, 0.25]
        with pytest.raises(openai.NotFoundError, match="--embeddings"):
            client.embeddings.create(model="chat", input="a")
        with pytest.raises(openai.BadRequestError, match="embeddings only"):
            client.chat.completions.create(
                model="embed", messages=[{"role": "user", "content": "a"}]
            )
    by_model = {argv[1]: argv for argv in _launches(fake_vllm)}
    pooling = by_model[str(embed.resolve())]
    assert _value(pooling, "--runner") == "pooling" and _value(pooling, "--convert") == "embed"
    assert "--runner" not in by_model[str(chat.resolve())]


def test_each_vllm_engine_takes_its_key_from_the_environment_and_refuses_others(
    tmp_path, fake_vllm
):
    """The stand-in enforces VLLM_API_KEY as vLLM does; replicas each have their own key."""
    with serve_models(
        [str(_folder(tmp_path, "one"))], engine="vllm", replicas=2, log_dir=tmp_path / "logs"
    ) as served:
        for _ in range(4):  # ties rotate: both replicas answer, each with its own key
            assert _answer(served, "one") == "model=one"
        engines = [r.engine for r in served.gateway.routes["one"].pool.replicas]
        assert len({engine.api_key for engine in engines}) == 2
        assert [r.served for r in served.gateway.routes["one"].pool.replicas] == [2, 2]
        for engine in engines:
            direct = f"{engine.base_url}/v1/chat/completions"
            body = {"model": "one", "messages": [{"role": "user", "content": "hi"}]}
            assert httpx.post(direct, json=body, timeout=30).status_code == 401
    for argv in _launches(fake_vllm):
        assert "--api-key" not in argv and not any(e.api_key in argv for e in engines)
