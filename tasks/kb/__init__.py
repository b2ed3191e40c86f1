"""Layer 1: the knowledge base, ingest -> clean -> validate -> chunk -> embed -> index -> verify, the vector store,
retrieval and its evaluation. Knows nothing of language models (tasks/lm)."""
