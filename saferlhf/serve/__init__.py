"""`saferlhf serve`: an OpenAI-compatible HTTP server over any HF causal LM (FastAPI + uvicorn, the `serve` extra)."""
