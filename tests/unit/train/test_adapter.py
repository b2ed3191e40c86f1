"""Classification metrics and adapter verification (tasks/train/adapter.py)."""

from __future__ import annotations

import pytest

from tasks.train.adapter import VerifyAdapterError, classification_metrics, verify_adapter


def test_classification_metrics():
    m = classification_metrics([0, 1, 1, 2], [0, 1, 2, 2])
    assert m["accuracy"] == 0.75 and 0 < m["f1"] < 1


def test_adapter_verification_catches_empty_and_missing_tensors(tmp_path):
    import torch
    from safetensors.torch import save_file

    expected = {"base.q.lora_A.weight": [4, 8], "base.q.lora_B.weight": [8, 4]}
    save_file(
        {"base.q.lora_A.weight": torch.ones(4, 8), "base.q.lora_B.weight": torch.ones(8, 4)},
        str(tmp_path / "adapter_model.safetensors"),
    )
    assert verify_adapter(tmp_path, expected)["parameters"] == 64
    save_file(
        {"base.q.lora_A.weight": torch.ones(4, 8), "base.q.lora_B.weight": torch.zeros(0)},
        str(tmp_path / "adapter_model.safetensors"),
    )  # what ZeRO-3 without gathering writes
    with pytest.raises(VerifyAdapterError, match="empty or have the wrong shape"):
        verify_adapter(tmp_path, expected)
    save_file({"base.q.lora_A.weight": torch.ones(4, 8)}, str(tmp_path / "adapter_model.safetensors"))
    with pytest.raises(VerifyAdapterError, match="keys differ"):
        verify_adapter(tmp_path, expected)
    save_file(
        {"base.q.lora_A.weight": torch.ones(4, 8), "base.q.lora_B.weight": torch.zeros(8, 4)},
        str(tmp_path / "adapter_model.safetensors"),
    )
    with pytest.raises(VerifyAdapterError, match="every lora_B weight is zero"):
        verify_adapter(tmp_path, expected)
