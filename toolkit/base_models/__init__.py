"""Where the model to fine-tune comes from: the embedded builtin, a Hub id, a local folder; and
what its files say about it (prequantized weights). Below the recipe, which validates names here."""
