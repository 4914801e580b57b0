"""The command line, the top floor: `main` (main.py) is the `tuneserve` entry point; each
command module parses, calls the pipeline, a domain or evals, and prints."""

from toolkit.cli.main import main

__all__ = ["main"]
