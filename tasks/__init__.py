"""ragtune stage logic: core (layer 0), kb and lm (1), train (2), pipeline (3), answer and versioning (4).

See docs/layout.md. Nothing here imports Prefect or DVC; flows/ wraps these functions in Prefect tasks."""
