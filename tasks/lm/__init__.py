"""Layer 1: language models: where a model comes from (hub id, folder, GGUF), chat templates, generation, tiny
models for tests. Knows nothing of the index (tasks/kb)."""
