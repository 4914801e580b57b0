"""The recipe: typed sections whose names and defaults follow Unsloth and TRL (SPEC §4).

Defaults live here and nowhere else. Loading YAML, `--set` overrides and error messages
with file and line are in `toolkit/recipe/loader.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from toolkit.base_models.builtin import BUILTIN_MODELS, BUILTIN_PREFIX
from toolkit.base_models.hub import parse_hub_id
from toolkit.core.modes import MODES, Mode
from toolkit.core.quants import GGUF_QUANTS

PROJECTION_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DATA_FORMATS = ("auto", "messages", "sharegpt", "alpaca", "problem_solution", "text")
EXPORT_FORMATS = ("lora", "merged16", "merged4", "gguf")
# transformers' OptimizerNames that make sense for LoRA/QLoRA fine-tuning.
OPTIMIZERS = (
    "adamw_8bit",
    "adamw_bnb_8bit",
    "paged_adamw_8bit",
    "paged_adamw_32bit",
    "adamw_torch",
    "adamw_torch_fused",
    "adafactor",
    "sgd",
    "adagrad",
    "rmsprop",
    "lion_8bit",
    "paged_lion_8bit",
    "lion_32bit",
    "schedule_free_adamw",
)

# Upper bounds catch typos and overflow (a batch of 10**21 is a mistake, not a request).
PositiveInt = Annotated[int, Field(gt=0, le=10**9)]
Seed = Annotated[int, Field(ge=0, lt=2**32)]


class Section(BaseModel):
    """Every section rejects unknown keys so a typo never silently does nothing."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _resolve_path(value: str, info: ValidationInfo) -> str:
    """Paths in a recipe are relative to the recipe file; saved recipes hold absolute ones."""
    base = (info.context or {}).get("base_dir")
    path = Path(value).expanduser()
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return str(path.resolve()) if base is not None else str(path)


class ModelSection(Section):
    name: str = Field(
        "builtin:smollm2-135m",
        description="builtin:smollm2-135m (the embedded default), a local HF model folder, or a "
        "Hub id such as Qwen/Qwen3-8B or Qwen/Qwen3-8B@<branch|tag|commit>, downloaded into the "
        "Hugging Face cache (HF_HOME, HF_TOKEN, HF_ENDPOINT, HF_HUB_OFFLINE are honoured)",
    )
    max_seq_length: Annotated[int, Field(gt=0, le=2**20)] = Field(
        2048, description="tokens per training row; longer rows are cut"
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="weights' dtype while training; auto picks what the device runs best"
    )
    load_in_4bit: bool = Field(False, description="QLoRA through bitsandbytes (CUDA only)")
    load_in_8bit: bool = Field(False, description="8-bit base through bitsandbytes (CUDA only)")
    full_finetuning: bool = Field(False, description="train every weight instead of a LoRA")
    chat_template: Literal["auto", "qwen3", "chatml", "llama3"] = Field(
        "auto", description="auto uses the tokenizer's own template"
    )

    @field_validator("name")
    @classmethod
    def _name_exists(cls, value: str, info: ValidationInfo) -> str:
        if value.startswith(BUILTIN_PREFIX):
            key = value.removeprefix(BUILTIN_PREFIX)
            if key not in BUILTIN_MODELS:
                known = ", ".join(BUILTIN_PREFIX + k for k in BUILTIN_MODELS)
                raise ValueError(f"unknown builtin model {value!r}; known: {known}")
            return value
        resolved = _resolve_path(value, info)
        if Path(resolved).exists():
            return resolved
        # Not a local folder: `org/name[@revision]` (never `./x`, `/x` or `~/x`) is a Hub id,
        # kept as written and downloaded when a command needs the weights, not while validating.
        if parse_hub_id(value) is not None:
            return value
        if info.context and info.context.get("check_paths", True):
            raise ValueError(
                f"model folder {resolved} does not exist; give a Hugging Face Hub id "
                "(org/name or org/name@revision), a local model folder, or builtin:smollm2-135m"
            )
        return resolved

    @model_validator(mode="after")
    def _one_quantization(self) -> ModelSection:
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("load_in_4bit and load_in_8bit are both true; choose one")
        if self.full_finetuning and (self.load_in_4bit or self.load_in_8bit):
            raise ValueError(
                "full_finetuning cannot train a 4/8-bit quantized model; set both load_in_* false"
            )
        return self


class LoraSection(Section):
    r: Annotated[int, Field(gt=0, le=4096)] = Field(32, description="rank: 8, 16, 32, 64, 128")
    lora_alpha: Annotated[int, Field(gt=0, le=65536)] = Field(32, description="usually r or 2*r")
    lora_dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.0, description="0 is the optimized path"
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="biases trained too")
    target_modules: list[str] = Field(
        default_factory=lambda: list(PROJECTION_MODULES),
        min_length=1,
        description="the layers that get adapters",
    )
    use_gradient_checkpointing: bool | Literal["unsloth", "auto"] = Field(
        "auto",
        description='auto: offload activations to host memory ("unsloth") from hidden size 4096 up,'
        " where the copies hide behind the compute; recompute (true) below when they fit the GPU;"
        " the hf backend recomputes for any value but false",
    )
    random_state: Seed = Field(3407, description="seed of the adapter's initial weights")
    use_rslora: bool = Field(False, description="rank-stabilized LoRA (scales by alpha/sqrt(r))")
    loftq_config: dict[str, Any] | None = Field(
        None, description="LoftQ initialization, e.g. {loftq_bits: 4}; null = none"
    )


class DataSource(Section):
    path: str = Field(
        description="a jsonl/json/parquet/csv file or folder, relative to the recipe file"
    )
    format: Literal[DATA_FORMATS] = Field(  # type: ignore[valid-type]
        "auto", description="auto detects it from the rows"
    )
    mode: Mode | None = Field(None, description="auto-detected when unset")
    weight: Annotated[float, Field(gt=0)] | None = Field(
        None, description="rows repeated by this factor (2 = twice, 0.5 = half); unset = 1"
    )
    name: str | None = Field(None, description="used by data.mix; default: the file's stem")

    @model_validator(mode="before")
    @classmethod
    def _bare_path(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @field_validator("path")
    @classmethod
    def _path_exists(cls, value: str, info: ValidationInfo) -> str:
        resolved = _resolve_path(value, info)
        if info.context and info.context.get("check_paths", True) and not Path(resolved).exists():
            raise ValueError(f"data file {resolved} does not exist")
        return resolved

    @property
    def label(self) -> str:
        return self.name or Path(self.path).stem


class ReplaySection(Section):
    """Self-distillation replay against forgetting: general prompts answered by the base model
    itself (greedy, generated once and cached by the base's hash), mixed into training."""

    ratio: Annotated[float, Field(ge=0, le=0.9)] = Field(
        0.0, description="share of replay rows in the training set; 0 turns replay off"
    )
    prompts: str = Field(
        "builtin",
        description="builtin (general prompts of the guard's kinds, none of its items) or a "
        ".jsonl file of {prompt} / {messages} lines",
    )
    max_tokens: Annotated[int, Field(gt=0, le=4096)] = Field(
        96, description="longest base answer kept; longer ones are dropped, not cut"
    )

    @model_validator(mode="before")
    @classmethod
    def _bare_ratio(cls, value: Any) -> Any:
        return {"ratio": value} if isinstance(value, int | float) else value

    @field_validator("prompts")
    @classmethod
    def _prompts_path(cls, value: str, info: ValidationInfo) -> str:
        if value == "builtin":
            return value
        resolved = _resolve_path(value, info)
        if info.context and info.context.get("check_paths", True) and not Path(resolved).exists():
            raise ValueError(f"replay prompts file {resolved} does not exist")
        return resolved


class DataSection(Section):
    sources: list[DataSource] = Field(
        default_factory=list, description="training files; `data: [a.jsonl]` is short for it"
    )
    mix: dict[str, Annotated[float, Field(gt=0, le=1)]] | None = Field(
        None, description="share of each source by name, e.g. {reasoning: 0.75, chat: 0.25}"
    )
    shuffle_seed: Seed = Field(42, description="seed of the shuffle and the heldout split")
    eval_split: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.1, description="fraction held out for the heldout eval suite"
    )
    train_on_responses_only: bool = Field(
        True, description="loss on the assistant's tokens only, not the prompts"
    )
    on_error: Literal["fail", "skip"] = Field(
        "fail", description="fail names the bad rows; skip trains without them"
    )
    replay: ReplaySection = Field(
        default_factory=ReplaySection,
        description="against forgetting: general prompts answered by the base itself, mixed in",
    )

    @model_validator(mode="before")
    @classmethod
    def _bare_list(cls, value: Any) -> Any:
        return {"sources": value} if isinstance(value, list) else value

    @model_validator(mode="after")
    def _mix_names_known(self) -> DataSection:
        if self.mix:
            labels = [s.label for s in self.sources]
            unknown = sorted(set(self.mix) - set(labels))
            if unknown:
                raise ValueError(f"mix names {unknown} match no source; sources are {labels}")
            if abs(sum(self.mix.values()) - 1.0) > 1e-6:
                raise ValueError(f"mix shares add up to {sum(self.mix.values()):g}, not 1")
        return self


class TrainSection(Section):
    backend: Literal["auto", "unsloth", "hf"] = Field(
        "auto", description="auto = unsloth on a CUDA GPU where installed, else hf"
    )
    per_device_train_batch_size: Annotated[int, Field(gt=0, le=65536)] = Field(
        2, description="rows per step on each device"
    )
    gradient_accumulation_steps: Annotated[int, Field(gt=0, le=65536)] = Field(
        4, description="steps summed into one update: batch = per_device x this"
    )
    warmup_steps: Annotated[int, Field(ge=0, le=10**9)] = Field(
        5, description="steps the learning rate ramps up over"
    )
    max_steps: PositiveInt | None = Field(
        None, description="30 when num_train_epochs is unset; set one of the two"
    )
    num_train_epochs: Annotated[float, Field(gt=0, le=10**6)] | None = Field(
        None, description="passes over the data, instead of max_steps"
    )
    learning_rate: Annotated[float, Field(gt=0, lt=1)] = Field(2e-4, description="peak rate")
    logging_steps: PositiveInt = Field(1, description="a loss line in metrics.jsonl every N steps")
    optim: Literal[OPTIMIZERS] = Field(  # type: ignore[valid-type]
        "adamw_8bit", description="adamw_torch is used where bitsandbytes is absent"
    )
    weight_decay: Annotated[float, Field(ge=0, le=1)] = Field(0.01, description="L2 penalty")
    lr_scheduler_type: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"
    ] = Field("linear", description="how the rate falls after warmup")
    seed: Seed = Field(3407, description="seed of the training order and dropout")
    save_steps: PositiveInt = Field(10, description="a checkpoint every N steps (resume, select)")
    packing: bool = Field(False, description="several short rows per sequence")
    bf16: bool | Literal["auto"] = Field("auto", description="auto = where the device has it")
    fp16: bool | Literal["auto"] = Field("auto", description="auto = on a GPU without bf16")
    max_grad_norm: Annotated[float, Field(gt=0, le=1e6)] = Field(
        1.0, description="gradients are clipped to this norm"
    )
    nproc: Annotated[int, Field(gt=0, le=1024)] = Field(
        1,
        description="data-parallel processes (one per GPU; gloo on CPU) launched through torchrun; "
        "the global batch stays per_device x accumulation of the recipe",
    )
    fsdp: bool = Field(
        False, description="shard the model across the nproc GPUs (FSDP) instead of DDP copies"
    )

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> TrainSection:
        if self.max_steps is not None and self.num_train_epochs is not None:
            raise ValueError("max_steps and num_train_epochs are both set; keep one")
        if self.max_steps is None and self.num_train_epochs is None:
            self.__dict__["max_steps"] = 30
        if self.bf16 is True and self.fp16 is True:
            raise ValueError("bf16 and fp16 are both true; choose one (or leave both auto)")
        return self


# Exports per engine when `export.formats` is unset: what that engine serves and what users
# deploy from it (a GGUF only where llama.cpp serves; converting 28 GB for nothing is hours).
DEFAULT_EXPORT_FORMATS = {"vllm": ("lora", "merged16"), "llamacpp": ("merged16", "gguf")}


class ExportSection(Section):
    formats: list[Literal[EXPORT_FORMATS]] | None = Field(  # type: ignore[valid-type]
        None,
        description="unset: lora + merged16 where run serves on vLLM, merged16 + gguf on llama.cpp",
    )
    quant: list[Literal[GGUF_QUANTS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["q8_0"], min_length=1, description="GGUF quantizations"
    )
    max_ppl_ratio: Annotated[float, Field(ge=1.0, le=100)] = Field(
        1.10, description="a quant whose perplexity ratio to merged16 exceeds this is flagged"
    )

    @staticmethod
    def default_formats(engine: str) -> list[str]:
        return list(DEFAULT_EXPORT_FORMATS[engine])

    @field_validator("quant", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [q.strip() for q in value.split(",")]
        if isinstance(value, list):
            return [q.lower() if isinstance(q, str) else q for q in value]
        return value


class ServeSection(Section):
    engine: Literal["auto", "vllm", "llamacpp"] = Field(
        "auto", description="auto = vLLM on a CUDA GPU where installed, else llama.cpp"
    )
    host: str = Field("127.0.0.1", description="the gateway's address; off 127.0.0.1 needs a key")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(8000, description="the gateway's port")
    mode: Literal[("auto", *MODES)] = Field(  # type: ignore[valid-type]
        "auto", description="default mode; auto = thinking when the template knows enable_thinking"
    )
    api_key: str | None = Field(
        None,
        # A secret: never written with the run (recipe.yaml, manifest hashes) nor printed.
        exclude=True,
        description="Bearer key clients must send; else $TUNESERVE_API_KEY; never saved with the run",
    )
    tuned_as: Literal["lora", "merged16"] = Field(
        "lora",
        description="on vLLM, the tuned model served as its adapter on the base's engine (one "
        "engine: half the memory and startup of two) or as the merged16 folder (the artifact "
        "you deploy; a second engine). llama.cpp serves the GGUF export either way",
    )


class EvalSection(Section):
    suites: list[str] = Field(
        default_factory=lambda: ["heldout", "guard"],
        min_length=1,
        description="scored greedily (temperature 0); guard: 300 general items",
    )
    fail_on_regression: Annotated[float, Field(ge=0, le=1)] | None = Field(
        None,
        description="exit 1 when the paired 95% interval of tuned - base reaches below -this "
        "on any suite",
    )
    concurrency: Annotated[int, Field(gt=0, le=4096)] = Field(
        8, description="requests in flight at once"
    )
    max_tokens: Annotated[int, Field(gt=0, le=10**6)] = Field(
        256, description="longest answer generated per item"
    )
    seed: Seed = Field(0, description="seed sent with every eval request")
    guard_margin: Annotated[float, Field(ge=0, le=1)] = Field(
        0.05,
        description="the tuned model passes a suite when the paired 95% interval of its change "
        "stays above -guard_margin (non-inferiority)",
    )
    noise_floor: bool = Field(
        True, description="ask the base everything twice and report how much it differs"
    )
    select: bool = Field(
        False,
        description="score every saved checkpoint on heldout + guard and keep the best heldout "
        "among those non-inferior on the guard",
    )


class Recipe(Section):
    name: str | None = Field(None, description="names the run; default: the recipe file's stem")
    model: ModelSection = Field(
        default_factory=ModelSection, description="the base model (Unsloth's FastLanguageModel)"
    )
    lora: LoraSection = Field(
        default_factory=LoraSection, description="the adapter (Unsloth's get_peft_model)"
    )
    data: DataSection = Field(default_factory=DataSection, description="what to train on")
    train: TrainSection = Field(
        default_factory=TrainSection, description="the training loop (TRL's SFTConfig)"
    )
    export: ExportSection = Field(default_factory=ExportSection, description="what to deploy")
    serve: ServeSection = Field(
        default_factory=ServeSection, description="the OpenAI-compatible gateway"
    )
    eval: EvalSection = Field(default_factory=EvalSection, description="the before/after eval")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        if value is not None and (not value or "/" in value or value.startswith(".")):
            raise ValueError("run name must be a plain folder name (no '/', not starting with '.')")
        return value

    @property
    def run_name(self) -> str:
        return self.name or "run"
