"""Training data for the tiny-model tests: the sample instructions. The shipped default (RAFT over the index with
the packaged SmolLM2) is exercised by the slow real-model tests."""

INSTRUCTIONS = {"format": "auto", "sources": ["data/sample/train/instructions.jsonl"], "max_length": 512}
INSTRUCTION_OVERRIDES = [f"dataset.{key}={value}".replace("'", "") for key, value in INSTRUCTIONS.items()]
