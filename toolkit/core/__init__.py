"""The shared base every other package stands on: errors, artifacts and atomic files, child
processes, sampling modes, GGUF quants, the tool prompt. It imports nothing above it."""
