"""The composition below the CLI: the stages of `tuneserve run` (run.py, stages.py, progress.py),
`tuneserve train` (training.py), and what wires data, training, export, serving and evals
together (comparison.py, forgetting.py, preflight.py). Domains meet only here."""
