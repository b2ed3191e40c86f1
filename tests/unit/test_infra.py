"""infra/: the compose stack and prefect.yaml are consistent with the code and validate."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from flows.deployments import build_deployments
from tasks.core.config import load_params
from tasks.kb.sparse import VECTOR_NAME
from tasks.kb.store import QdrantStore

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "infra/docker-compose.yml"
CLUSTER = REPO / "infra/qdrant-cluster"


def test_compose_stack_declares_services_secrets_and_volumes():
    spec = yaml.safe_load(COMPOSE.read_text())
    assert set(spec["services"]) == {"postgres", "prefect-server", "qdrant", "worker"}
    used = set(re.findall(r"\$\{([A-Z_]+)", COMPOSE.read_text()))
    example = {
        line.split("=")[0]
        for line in (REPO / "infra/.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert used <= example, f"variables missing from infra/.env.example: {used - example}"
    for name, service in spec["services"].items():
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in spec["volumes"], f"{name}: undeclared volume {volume}"
    server = spec["services"]["prefect-server"]["environment"]
    assert "postgresql+asyncpg" in server["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert "PREFECT_SERVER_API_AUTH_STRING" in server
    assert "QDRANT__SERVICE__API_KEY" in spec["services"]["qdrant"]["environment"]
    assert "/infra/.env" in (REPO / ".gitignore").read_text().splitlines()


def test_docker_compose_config_validates_when_the_plugin_is_installed():
    import shutil

    probe = shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if not probe or probe.returncode != 0:
        pytest.skip("docker compose plugin not installed (the YAML checks above still ran)")
    for compose in (COMPOSE, CLUSTER / "docker-compose.yml"):
        proc = subprocess.run(
            ["docker", "compose", "-f", str(compose), "--env-file", str(REPO / "infra/.env.example"), "config", "-q"],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, f"{compose}: {proc.stderr}"


def test_prefect_yaml_matches_the_served_deployments():

    served = {d.name for d in build_deployments(REPO, load_params(REPO / "params.yaml"))}
    declared = {d["name"] for d in yaml.safe_load((REPO / "infra/prefect.yaml").read_text())["deployments"]}
    assert served == declared


def test_qdrant_cluster_compose_runs_three_peers_with_the_key_from_the_environment():
    text = (CLUSTER / "docker-compose.yml").read_text()
    spec = yaml.safe_load(text)
    nodes = spec["services"]
    assert sorted(nodes) == ["qdrant-0", "qdrant-1", "qdrant-2"]
    assert "--bootstrap" not in nodes["qdrant-0"]["command"]
    for name, node in nodes.items():
        assert re.fullmatch(r"qdrant/qdrant:v\d+\.\d+\.\d+", node["image"]), f"{name}: pin the image version"
        assert node["environment"]["QDRANT__CLUSTER__ENABLED"] == "true"
        assert node["environment"]["QDRANT__SERVICE__API_KEY"].startswith("${QDRANT_API_KEY"), "no literal API key"
        assert f"http://{name}:6335" in node["command"]
        assert not any("6335" in port for port in node.get("ports", [])), f"{name}: the p2p port has no API key"
        for volume in node["volumes"]:
            assert volume.split(":")[0] in spec["volumes"], f"{name}: undeclared volume {volume}"
    for name in ("qdrant-1", "qdrant-2"):
        assert "http://qdrant-0:6335" in nodes[name]["command"]
    example = {line.split("=")[0] for line in (REPO / "infra/.env.example").read_text().splitlines() if "=" in line}
    assert set(re.findall(r"\$\{([A-Z_]+)", text)) <= example


@pytest.mark.filterwarnings("ignore:Payload indexes have no effect")
def test_qdrant_cluster_request_bodies_validate_and_match_params(tmp_path):
    from qdrant_client import QdrantClient, models

    index = load_params(REPO / "params.yaml").index
    create = models.CreateCollection(**json.loads((CLUSTER / "collection.json").read_text()))
    patch = models.UpdateCollection(**json.loads((CLUSTER / "hnsw-m16.json").read_text()))
    fields = [models.CreateFieldIndex(**b) for b in json.loads((CLUSTER / "payload-indexes.json").read_text())]
    assert create.hnsw_config.m == 0 and create.hnsw_config.ef_construct == index.hnsw_ef_construct
    assert create.shard_number % 3 == 0 and create.replication_factor >= 2  # whole shards per node, one spare copy
    assert (patch.hnsw_config.m, patch.hnsw_config.ef_construct) == (index.hnsw_m, index.hnsw_ef_construct)
    assert create.vectors.distance.value.lower() == index.distance
    assert create.sparse_vectors[VECTOR_NAME].modifier == models.Modifier.IDF
    assert sorted(f.field_name for f in fields) == ["doc_id", "source"]

    spec = importlib.util.spec_from_file_location("bulk_load", CLUSTER / "bulk_load.py")
    bulk_load = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bulk_load)
    points = tmp_path / "points.jsonl"
    rows = [
        {"id": str(uuid.uuid4()), "vector": [float(i + 1)] * create.vectors.size, "payload": {"doc_id": f"d{i}"}}
        for i in range(5)
    ]
    rows[0]["sparse"] = {"indices": [3], "values": [1.0]}
    points.write_text("".join(json.dumps(r) + "\n" for r in rows))
    client = QdrantClient(":memory:")  # local mode ignores shards, replicas and HNSW: this checks the wiring only
    assert bulk_load.bulk_load(client, index.collection, points, 2, 2, timeout_s=5, poll_s=0) == (5, 5)
    fingerprint = {"dim": create.vectors.size, "distance": "cosine", "sparse": True, "model": "m", "chunking": "c"}
    store = QdrantStore(client, index, "memory", is_server=False)
    assert store.ensure_collection(fingerprint, "r1") is None  # ragtune refreshes it in place
