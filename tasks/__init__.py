"""Stage logic for ragtune: plain Python, no Prefect or DVC imports (flows/ wraps these as Prefect tasks)."""
