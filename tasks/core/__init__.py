"""Layer 0: config, errors, workspace paths, the stage context, JSONL, GX plumbing, QA files. Imports no other
ragtune package."""
