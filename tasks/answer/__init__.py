"""Layer 4: answering: ask in four modes (base, rag, ft, hybrid) and compare them on a QA set."""
