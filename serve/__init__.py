"""tuneserve serving: engine launchers, process supervision and the OpenAI-compatible gateway."""
