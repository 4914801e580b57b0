"""What a recipe will need later, checked before training starts: a failure found minutes into
`run` (or at export) should be found in the first second instead.

Today that is held-out text: the `heldout` eval suite needs held-out rows. (Export's GGUF
perplexity check uses held-out text when there is some and the training text otherwise, so it
needs nothing here.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolkit.core.errors import TuneserveError
from toolkit.recipe.schema import Recipe

if TYPE_CHECKING:
    from toolkit.data import PreparedData


def check_recipe_needs(recipe: Recipe) -> None:
    """What the recipe alone shows: call before the data is read."""
    if "heldout" in recipe.eval.suites and recipe.data.eval_split == 0:
        raise TuneserveError(
            "eval.suites includes 'heldout', but data.eval_split is 0: no rows are held out "
            "for it, and the eval after training would fail",
            "set data.eval_split (e.g. 0.1), or list your own suites under eval.suites "
            "instead of heldout (e.g. [my_suite.jsonl, guard])",
        )


def check_data_needs(recipe: Recipe, data: PreparedData) -> None:
    """What the prepared data shows: call before the model is loaded."""
    if "heldout" in recipe.eval.suites and not data.heldout:
        raise TuneserveError(
            f"eval.suites includes 'heldout', but data.eval_split {recipe.data.eval_split:g} "
            f"of {len(data.train)} row(s) holds out none (a source needs 2+ rows to give one)",
            "add rows, raise data.eval_split, or list your own suites under eval.suites",
        )
