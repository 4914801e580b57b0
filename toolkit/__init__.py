"""tuneserve toolkit: recipe, data, training, export and the one-command pipeline."""

__version__ = "0.1.0"
