"""Training: the launcher starts the training processes (worker.py, one per rank under torchrun),
each loads the model through a backend (hf_loader.py, unsloth_loader.py) and runs a session
(session.py). It reads the recipe and data the pipeline saved in the run folder."""
