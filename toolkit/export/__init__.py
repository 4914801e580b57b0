"""Export: a run's adapter as lora, merged16 (merge.py), GGUF (gguf.py, lora_gguf.py) and a
Modelfile (modelfile.py), each checked against its source (verify.py); run_export.py decides
what a run needs and records it in the manifest."""
