"""llama.cpp engine: native `llama-server` when there is one, else llama-cpp-python's server.

Which native binary: $TUNESERVE_LLAMA_SERVER (a path; `off` forces llama-cpp-python's server),
else `llama-server` on PATH, else the one `make install` built and cached
(tools/build_llama_server.py).

llama-cpp-python's server takes `chat_template_kwargs` only at load time, so for a template
that knows `enable_thinking` the gateway renders the template itself (per request) and calls
the engine's /v1/completions; `chat_to_completion` and `completion_to_chat*` do that mapping.
The gateway does the same for tool requests on either server (serve/tools.py).

Context: every request may use the model's trained context (or `ctx`): each of llama-server's
slots gets a KV cache of that size (`-c` is the total, context x slots) instead of a quarter of
it. Not one unified cache shared by the slots, though it would take a quarter of the memory:
with it a greedy answer depends on what else is in the batch (the A/A test, one GGUF on two
engines, saw 1 of 20 guard items answered differently), and the eval's noise floor must be 0.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from serve.chat_template import render_chat
from serve.engines.base import Engine, EngineError
from serve.engines.llama_server_cache import find_cached
from toolkit.core.errors import TuneserveError
from toolkit.core.modes import template_knows_thinking

DEFAULT_CTX = 4096  # when the GGUF does not say what context the model was trained with

# Chat fields with no /v1/completions meaning (the rendered prompt already carries them).
_CHAT_ONLY = {"messages", "tools", "tool_choice", "parallel_tool_calls", "functions"}
_CHAT_ONLY |= {"function_call", "chat_template_kwargs", "response_format", "logprobs"}
_CHAT_ONLY |= {"top_logprobs", "max_completion_tokens"}


@dataclass
class LlamaCppEngine(Engine):
    n_ctx: int | None = None  # None: the context the model was trained with
    threads: int | None = None
    parallel: int = 4  # native llama-server slots (continuous batching)
    gpus: int = 0  # >0: every layer offloaded, split by layer across this many GPUs
    # GGUF LoRA adapters loaded beside the model at scale 0; a request picks one with
    # `lora: [{"id": i, "scale": 1}]` (the gateway adds it for the adapter's served name)
    lora_files: list[Path] = field(default_factory=list)

    kind: ClassVar[str] = "llamacpp"

    @cached_property
    def native_binary(self) -> str | None:
        # decided once per engine: the gateway asks `renders_chat` on every request
        return native_llama_server()

    @property
    def legacy_completions(self) -> bool:  # type: ignore[override]
        return self.native_binary is None  # llama-cpp-python's server speaks the legacy shape

    @property
    def reuses_connections(self) -> bool:  # type: ignore[override]
        """Not for llama-server: it closes kept-alive connections without reading the next
        request, with more clients than its HTTP threads (8 clients, 4 slots: 204 of 416
        requests on reused connections got no answer) and even with one client streaming one
        request after another (1 to 3 of every 12), and a request once written is never sent
        again (it may be generating). A new loopback connection per request costs ~0.1 ms."""
        return self.native_binary is None

    @cached_property
    def renders_chat(self) -> bool:  # type: ignore[override]
        return self.native_binary is None and template_knows_thinking(self.chat_template())

    def command(self) -> list[str]:
        threads = str(self.threads or max(1, (os.cpu_count() or 2)))
        binary = self.native_binary
        if binary:
            argv = [binary, "-m", str(self.model_path), "--host", self.host]
            argv += ["--port", str(self.port), "--alias", self.name, "--jinja"]
            # every slot holds the whole context in a cache of its own (see the module docstring)
            argv += ["--parallel", str(self.parallel), "-c", str(self.context * self.parallel)]
            argv += ["--no-kv-unified"]
            argv += ["--threads", threads, "--cont-batching", "--metrics", "--no-webui"]
            # <think> text stays in the content: the gateway splits it the same way for every
            # engine, and knows when the template already closed the think block.
            argv += ["--reasoning-format", "none"]
            if self.embeddings:  # an embeddings-only engine; a chat model has no pooling set
                argv += ["--embeddings"]
                argv += [] if self._metadata["pooling"] else ["--pooling", "mean"]
            argv += gpu_split_flags(self.gpus, native=True)
            # Loaded at scale 0, so a request without `lora` (the model's own name) is the base:
            # this llama-server applies the load-time scales to such requests, and
            # --lora-init-without-apply does not change those (seen: the base answered as the
            # adapter).
            for adapter in self.lora_files:
                if {",", ":"} & set(str(adapter)):
                    raise EngineError(
                        f"LoRA path {adapter} has ',' or ':', which llama-server's "
                        "--lora-scaled cannot read",
                        "move or rename the file",
                    )
                argv += ["--lora-scaled", f"{adapter}:0"]
            return argv
        if self.lora_files:
            raise EngineError(
                "LoRA adapters per request need the native llama-server; llama-cpp-python's "
                "server applies one adapter to every request",
                "build it: python tools/build_llama_server.py",
            )
        if self.embeddings:
            raise TuneserveError(
                f"--embeddings {self.name}: llama-cpp-python's server cannot pool a chat "
                "model's embeddings; the native llama-server can",
                "build it once: python tools/build_llama_server.py",
            )
        argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path)]
        argv += ["--model_alias", self.name, "--host", self.host, "--port", str(self.port)]
        # Without this, a second request silently truncates the stream of the first.
        argv += ["--interrupt_requests", "False", "--n_ctx", str(self.context)]
        argv += ["--n_threads", threads, "--n_threads_batch", threads]
        return argv + gpu_split_flags(self.gpus, native=False)

    def key_environment(self) -> dict[str, str]:
        if self.native_binary:
            return {"LLAMA_API_KEY": self.api_key or ""}  # llama-server's env for --api-key
        # llama-cpp-python's server reads its settings (pydantic-settings, no prefix) from the
        # environment too: API_KEY. Its __main__ also lets $HOST/$PORT win over --host/--port,
        # so a HOST or PORT the user's shell happens to export must not move the engine.
        return {"API_KEY": self.api_key or "", "HOST": self.host, "PORT": str(self.port)}

    def extra_sampling(self) -> dict[str, float]:
        return {"repeat_penalty": 1.0}

    @property
    def context(self) -> int:
        """Tokens one request may use: `n_ctx` when given, else the model's trained context."""
        return self.n_ctx or self._metadata["context_length"] or DEFAULT_CTX

    def adapter_body(self, index: int) -> dict[str, Any]:
        """What a request to the adapter loaded `index`-th adds: that adapter at full scale
        (the others stay at 0)."""
        return {"lora": [{"id": index, "scale": 1.0}]}

    @cached_property
    def _metadata(self) -> dict[str, Any]:
        """The few GGUF keys the gateway needs: context, chat template and special tokens.

        All None for a file gguf cannot read: the engine then fails to load it and says why in
        its own log, which the readiness error quotes."""
        from gguf import GGUFReader

        try:
            reader = GGUFReader(str(self.model_path))
        except Exception:  # missing, not a GGUF, truncated: gguf raises OSError/ValueError/...
            return dict.fromkeys(("context_length", "pooling", "chat_template"), None) | {
                "bos_token": "",
                "eos_token": "",
            }

        def scalar(key: str) -> Any:
            entry = reader.fields.get(key)
            return entry.contents() if entry is not None else None

        tokens = reader.fields.get("tokenizer.ggml.tokens")

        def token(key: str) -> str:
            index = scalar(key)
            if index is None or tokens is None:
                return ""
            return tokens.contents(int(index))

        arch = scalar("general.architecture")
        trained = scalar(f"{arch}.context_length") if arch else None
        return {
            "context_length": int(trained) if trained else None,
            "pooling": scalar(f"{arch}.pooling_type") if arch else None,
            "chat_template": scalar("tokenizer.chat_template"),
            "bos_token": token("tokenizer.ggml.bos_token_id"),
            "eos_token": token("tokenizer.ggml.eos_token_id"),
        }

    def chat_template(self) -> str | None:
        return self._metadata["chat_template"]

    def render(self, body: dict) -> str:
        """The prompt text of a chat request, with its `chat_template_kwargs` and tools."""
        return render_chat(
            self.chat_template() or "",
            body["messages"],
            tools=body.get("tools"),
            kwargs=body.get("chat_template_kwargs"),
            bos_token=self._metadata["bos_token"],
            eos_token=self._metadata["eos_token"],
        )


def native_llama_server() -> str | None:
    """The native llama-server to run, or None for llama-cpp-python's server (see above)."""
    chosen = os.environ.get("TUNESERVE_LLAMA_SERVER")
    if chosen:
        return None if chosen.lower() == "off" else chosen
    on_path = shutil.which("llama-server")
    if on_path:
        return on_path

    cached = find_cached()
    return str(cached) if cached else None


def gpu_split_flags(gpus: int, native: bool) -> list[str]:
    """Offload every layer and split the layers evenly over `gpus` GPUs (--gpus N)."""
    if gpus <= 0:
        return []
    if native:  # llama-server: comma-separated proportions
        split = ",".join(["1"] * gpus)
        return ["--n-gpu-layers", "999", "--split-mode", "layer", "--tensor-split", split]
    # llama-cpp-python: -1 = all layers; split_mode 1 = LLAMA_SPLIT_MODE_LAYER; a list argument
    return ["--n_gpu_layers", "-1", "--split_mode", "1", "--tensor_split", *["1"] * gpus]


def chat_to_completion(body: dict, prompt: str) -> dict:
    """The /v1/completions body equivalent to a chat body whose template rendered `prompt`."""
    out = {key: value for key, value in body.items() if key not in _CHAT_ONLY}
    out["prompt"] = prompt
    if body.get("max_completion_tokens") is not None:
        out["max_tokens"] = body["max_completion_tokens"]
    if body.get("logprobs") and body.get("top_logprobs") is not None:
        out["logprobs"] = body["top_logprobs"]
    return out


def _chat_id(completion_id: object) -> str:
    text = str(completion_id or uuid.uuid4().hex)
    return text if text.startswith("chatcmpl-") else "chatcmpl-" + text.removeprefix("cmpl-")


def completion_to_chat(response: dict) -> dict:
    """A text_completion response reshaped as a chat.completion."""
    choices = [
        {
            "index": choice.get("index", 0),
            "message": {"role": "assistant", "content": choice.get("text", "")},
            "logprobs": None,
            "finish_reason": choice.get("finish_reason"),
        }
        for choice in response.get("choices", [])
    ]
    out = {key: value for key, value in response.items() if key not in ("choices", "object")}
    return {
        **out,
        "id": _chat_id(response.get("id")),
        "object": "chat.completion",
        "choices": choices,
    }


def completion_chunk_to_chat(chunk: dict, first: bool) -> dict:
    """A streamed text_completion chunk reshaped as a chat.completion.chunk."""
    choices = []
    for choice in chunk.get("choices", []):
        delta: dict[str, Any] = {"role": "assistant"} if first else {}
        delta["content"] = choice.get("text", "")
        choices.append(
            {
                "index": choice.get("index", 0),
                "delta": delta,
                "logprobs": None,
                "finish_reason": choice.get("finish_reason"),
            }
        )
    out = {key: value for key, value in chunk.items() if key not in ("choices", "object")}
    return {
        **out,
        "id": _chat_id(chunk.get("id")),
        "object": "chat.completion.chunk",
        "choices": choices,
    }
