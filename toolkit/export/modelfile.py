"""An Ollama Modelfile beside the GGUF: template, stop tokens and the default mode's sampling."""

from __future__ import annotations

from pathlib import Path

from toolkit.core.artifacts import atomic_write_text
from toolkit.core.modes import SAMPLING, default_mode

CHATML_TEMPLATE = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
LLAMA3_TEMPLATE = """{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>

"""


def render_modelfile(gguf_name: str, chat_template: str | None) -> str:
    sampling = SAMPLING[default_mode(chat_template)]
    lines = [f"FROM ./{gguf_name}", ""]
    template = chat_template or ""
    if "<|im_start|>" in template:
        lines += [f'TEMPLATE """{CHATML_TEMPLATE}"""', 'PARAMETER stop "<|im_end|>"']
    elif "<|start_header_id|>" in template:
        lines += [f'TEMPLATE """{LLAMA3_TEMPLATE}"""', 'PARAMETER stop "<|eot_id|>"']
    lines += [f"PARAMETER {key} {value:g}" for key, value in sampling.as_dict().items()]
    return "\n".join(lines) + "\n"


def write_modelfile(folder: Path, gguf_name: str, chat_template: str | None) -> Path:
    path = folder / "Modelfile"
    atomic_write_text(path, render_modelfile(gguf_name, chat_template))
    return path
