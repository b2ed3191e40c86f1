"""Prefect flows and the ragtune CLI: thin wrappers over the stage logic in tasks/."""
