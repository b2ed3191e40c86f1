"""embed.backend with the real packaged model: the int8 OpenVINO encoder agrees with PyTorch fp32, loads without
importing torch once built, and switching backends rebuilds the index (the vectors' fingerprint changed)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from flows.kb_refresh import kb_refresh
from tasks.core.config import EmbedParams
from tasks.kb.embedder import CALIBRATION, ensure_int8_model, make_embedder

from .helpers import expected_ids, stored_points

pytestmark = pytest.mark.slow

TEXTS = [line for line in CALIBRATION.read_text(encoding="utf-8").splitlines() if line.strip()][:40]


def test_int8_vectors_agree_with_pytorch_and_load_without_torch():
    int8 = make_embedder(EmbedParams(backend="openvino-int8")).embed(TEXTS)
    fp32 = make_embedder(EmbedParams(backend="torch")).embed(TEXTS)
    assert int8.shape == fp32.shape == (len(TEXTS), 384)
    assert np.allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)
    assert (int8 * fp32).sum(1).min() > 0.98, "int8 keeps each vector's direction"
    alone = make_embedder(EmbedParams(backend="openvino-int8", batch_size=7)).embed(TEXTS[:3])
    assert np.allclose(alone, int8[:3], atol=2e-3), "a text's vector hardly depends on its batch"

    assert (ensure_int8_model(EmbedParams().model) / "model.xml").exists()
    probe = (
        "import sys; from tasks.core.config import EmbedParams; from tasks.kb.embedder import make_embedder; "
        "make_embedder(EmbedParams()).embed(['a heat pump']); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False", "the built encoder loads and runs without PyTorch"


def test_switching_the_backend_rebuilds_the_index_with_the_other_vectors(workspace):
    first = kb_refresh(root=str(workspace), overrides=["embed.backend=torch"])
    assert first["serving"]["rebuilt"] is None
    switched = kb_refresh(root=str(workspace))  # the default backend: openvino-int8
    assert switched["chunks"]["embedded"] == switched["chunks"]["total"], "no torch vector is reused"
    assert switched["serving"]["rebuilt"].startswith("model changed")
    assert set(stored_points(workspace)) == expected_ids(workspace)
