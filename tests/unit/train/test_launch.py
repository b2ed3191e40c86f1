"""The torchrun launch of a multi-process train (tasks/train/launch.py): command, environment, port, failures."""

from __future__ import annotations

import socket
from pathlib import Path

from tasks.core.config import TrainParams
from tasks.core.errors import ConfigError, RagtuneError, VerifyError
from tasks.train.adapter import VerifyAdapterError
from tasks.train.launch import (
    LaunchError,
    child_env,
    failure,
    forward_progress,
    launch_command,
    needs_launcher,
    rendezvous_port,
)

JOB = Path("/w/models/checkpoints/launch/job.json")


def test_one_node_is_a_static_rendezvous_at_master_addr_and_port():
    cmd = launch_command(TrainParams(processes=2), JOB, 29511, "/venv/bin/python", "abc")
    assert cmd == [
        "/venv/bin/python",
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--nnodes",
        "1",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        "29511",
        "-m",
        "tasks.train.launch",
        str(JOB),
    ]


def test_several_nodes_meet_at_master_addr_under_the_run_key():
    p = TrainParams(processes=4, nnodes=2, master_addr="node0", master_port=29600)
    cmd = launch_command(p, JOB, 29600, "python", "runkey1")
    assert cmd[3:7] == ["--nproc_per_node", "4", "--nnodes", "2"]
    assert cmd[7:13] == ["--rdzv_backend", "c10d", "--rdzv_endpoint", "node0:29600", "--rdzv_id", "runkey1"]
    assert "--master_addr" not in cmd and cmd[-3:] == ["-m", "tasks.train.launch", str(JOB)]


def test_the_launcher_runs_only_for_more_than_one_process_and_not_inside_another(monkeypatch):
    for var in ("WORLD_SIZE", "RAGTUNE_DIST_ENV"):
        monkeypatch.delenv(var, raising=False)
    assert not needs_launcher(TrainParams())
    assert needs_launcher(TrainParams(processes=2)) and needs_launcher(TrainParams(nnodes=2))
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RAGTUNE_DIST_ENV", "1")  # set by an earlier one-process DeepSpeed run in this process
    assert needs_launcher(TrainParams(processes=2))
    monkeypatch.delenv("RAGTUNE_DIST_ENV")  # `torchrun ... ragtune stage train`: already a worker
    assert not needs_launcher(TrainParams(processes=2))


def test_workers_get_the_parents_environment_without_its_rank_variables():
    env = child_env({"PATH": "/bin", "RANK": "0", "WORLD_SIZE": "1", "MASTER_PORT": "1", "RAGTUNE_DIST_ENV": "1"})
    assert env == {"PATH": "/bin", "PYTHONUNBUFFERED": "1"}


def test_a_taken_port_on_one_node_is_replaced_by_a_free_one():
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        free = rendezvous_port(TrainParams(master_port=port))
        assert free != port
        assert rendezvous_port(TrainParams(master_port=port, nnodes=2)) == port, "every node must agree on it"


def test_a_workers_expected_error_keeps_its_class_and_names_the_log():
    log = Path("/w/models/checkpoints/launch/train.log")
    p = TrainParams(processes=2)
    exc = failure(1, {"type": "ConfigError", "message": "train.lora.target_modules: bad", "rank": 1}, log, p)
    assert isinstance(exc, ConfigError) and exc.exit_code == 3
    assert str(exc) == f"train.lora.target_modules: bad (rank 1 of 2; full output in {log})"
    assert isinstance(failure(1, {"type": "VerifyAdapterError", "message": "m"}, log, p), VerifyAdapterError)
    assert type(failure(1, {"type": "SomethingElse", "message": "m"}, log, p)) is RagtuneError


def test_a_crashed_worker_is_one_message_with_the_log_and_the_fix():
    log = Path("/w/train.log")
    exc = failure(-9, None, log, TrainParams(processes=2, nnodes=2))
    assert isinstance(exc, LaunchError) and isinstance(exc, VerifyError) and exc.exit_code == 7
    assert "the 4 training processes exited with status -9" in str(exc) and str(log) in str(exc)
    assert "train.processes=1 train.nnodes=1" in str(exc)


def test_rank_0_progress_is_forwarded_once_per_change(tmp_path):
    seen: list[tuple[int, int]] = []
    path = tmp_path / "progress.json"
    assert forward_progress(path, None, lambda d, t: seen.append((d, t))) is None  # not written yet
    path.write_text('{"done": 3, "total": 10}')
    last = forward_progress(path, None, lambda d, t: seen.append((d, t)))
    last = forward_progress(path, last, lambda d, t: seen.append((d, t)))
    path.write_text('{"done": 4, "tot')  # never happens (written atomically), and would be skipped
    assert forward_progress(path, last, lambda d, t: seen.append((d, t))) == (3, 10)
    assert seen == [(3, 10)]
