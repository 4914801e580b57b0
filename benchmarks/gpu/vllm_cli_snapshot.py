"""Write serve/engines/vllm_cli_snapshot.json from the installed vLLM's own `vllm serve` parser
(run where vLLM imports, i.e. on the GPU machine), so the launcher's flags are pinned to the
version really run. Usage: python3 benchmarks/gpu/vllm_cli_snapshot.py OUT.json"""

from __future__ import annotations

import argparse
import json
import sys

import vllm
from vllm.entrypoints.openai.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser


def main() -> None:
    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))
    actions = parser._actions  # argparse keeps no public list of its options
    snapshot = {
        "what": "Options of the `vllm serve` argument parser, dumped from the installed vLLM "
        "(vllm.entrypoints.openai.cli_args.make_arg_parser) by benchmarks/gpu/vllm_cli_snapshot.py.",
        "vllm_version": vllm.__version__,
        "positional": [a.dest for a in actions if not a.option_strings],
        "boolean_optional": sorted(
            a.option_strings[0]
            for a in actions
            if isinstance(a, argparse.BooleanOptionalAction) or a.nargs == 0
        ),
        "options": sorted({flag for a in actions for flag in a.option_strings}),
    }
    with open(sys.argv[1], "w") as out:
        json.dump(snapshot, out, indent=1)
    print(f"vllm {vllm.__version__}: {len(snapshot['options'])} options -> {sys.argv[1]}")


if __name__ == "__main__":
    main()
