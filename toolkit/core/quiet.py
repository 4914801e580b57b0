"""Silence the progress bars and chatter of datasets/transformers, which would drown
tuneserve's own progress display. Called by the commands that load models."""

from __future__ import annotations


def quiet_libraries() -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
