"""THE list of GGUF quantizations: which the HF -> GGUF converter writes itself, and which
llama.cpp's quantizer makes from an f16 GGUF. The recipe validates against it, export follows it."""

from __future__ import annotations

# Written directly by the converter (convert_hf_to_gguf --outtype).
CONVERTER_TYPES: tuple[str, ...] = ("f32", "f16", "bf16", "q8_0")
# Made by the quantizer from the f16 GGUF: llama.cpp's llama_ftype values (include/llama.h).
QUANTIZER_TYPES: dict[str, int] = {
    "q6_k": 18,
    "q5_k_m": 17,
    "q5_k_s": 16,
    "q5_0": 8,
    "q4_k_m": 15,
    "q4_k_s": 14,
    "q4_0": 2,
    "q3_k_m": 12,
    "q2_k": 10,
}
# Every quant a recipe may ask for, most precise first.
GGUF_QUANTS: tuple[str, ...] = (*CONVERTER_TYPES, *QUANTIZER_TYPES)
