"""Data-parallel training past one process: the train stage starts torchrun, and torchrun runs this module.

The parent (the train stage) writes the job (root, resolved params, run key, paths) to a JSON file, starts
`python -m torch.distributed.run ... -m tasks.train.launch JOB` with its output in a log file, forwards rank 0's
progress file to the stage's progress callback, and reads the result rank 0 wrote. Verification, evaluate and
promote then run in the parent exactly as after a one-process run. Each worker re-reads the job and runs the
same `train_lora`: HF Trainer sees torchrun's RANK/WORLD_SIZE and trains data-parallel, through DeepSpeed ZeRO
when train.deepspeed is set (plain DDP otherwise), over gloo on CPU and nccl on GPUs.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tasks.core.config import Params, TrainParams
from tasks.core.errors import RagtuneError, VerifyError
from tasks.core.stage import OnProgress
from tasks.core.workspace import Layout, read_json, read_jsonl, write_json
from tasks.train.trainer import is_main_process, train_lora

log = logging.getLogger("ragtune")
# What a launcher exports to its workers; the parent's own values (set by single_process_env for an in-process
# DeepSpeed run) must not reach torchrun's workers, which get theirs from torchrun.
DIST_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "RAGTUNE_DIST_ENV")
POLL_S = 0.5


class LaunchError(VerifyError):
    """The training processes torchrun started failed without an expected error (a crash, a kill), so the stage
    has no adapter to verify; their traceback is in the launch log, not on the terminal."""


@dataclass(frozen=True)
class LaunchFiles:
    """The files parent and workers share, in one folder beside the checkpoints (models/checkpoints/launch)."""

    folder: Path

    @property
    def job(self) -> Path:
        return self.folder / "job.json"  # what to train: root, resolved params, run key, output paths

    @property
    def log(self) -> Path:
        return self.folder / "train.log"  # torchrun's and every worker's stdout and stderr

    @property
    def progress(self) -> Path:
        return self.folder / "progress.json"  # rank 0: {"done": step, "total": max_steps}

    @property
    def result(self) -> Path:
        return self.folder / "result.json"  # rank 0: train_lora's metrics and expected adapter state

    @property
    def error(self) -> Path:
        return self.folder / "error.json"  # a worker's expected error: class, message, rank


def launch_files(ws: Layout) -> LaunchFiles:
    return LaunchFiles(ws.checkpoints.parent / "launch")


def launched_externally() -> bool:
    """This process is already a worker of a launcher someone else started (`torchrun ragtune stage train`)."""
    return "WORLD_SIZE" in os.environ and os.environ.get("RAGTUNE_DIST_ENV") != "1"


def needs_launcher(p: TrainParams) -> bool:
    """More than one process or node asked for, and no outside launcher already started this one."""
    return (p.processes > 1 or p.nnodes > 1) and not launched_externally()


def launch_command(p: TrainParams, job: Path, port: int, python: str, run_id: str) -> list[str]:
    """torchrun's command line. One node: a static rendezvous at master_addr:port. Several nodes: the same command
    on each node meets at master_addr:master_port (c10d rendezvous, keyed by the run), which numbers the nodes."""
    cmd = [python, "-m", "torch.distributed.run", "--nproc_per_node", str(p.processes), "--nnodes", str(p.nnodes)]
    if p.nnodes == 1:
        cmd += ["--master_addr", p.master_addr, "--master_port", str(port)]
    else:
        cmd += ["--rdzv_backend", "c10d", "--rdzv_endpoint", f"{p.master_addr}:{port}", "--rdzv_id", run_id]
    return [*cmd, "-m", "tasks.train.launch", str(job)]


def child_env(env: dict[str, str]) -> dict[str, str]:
    """The parent's environment without a launcher's variables, and unbuffered so the log is complete on a crash."""
    return {k: v for k, v in env.items() if k not in DIST_ENV} | {"PYTHONUNBUFFERED": "1"}


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("", port))  # torchrun's store listens on every interface
        except OSError:
            return False
    return True


def rendezvous_port(p: TrainParams) -> int:
    """train.master_port, or on one node a free port when it is taken (every node of several must agree on it)."""
    if p.nnodes > 1 or port_is_free(p.master_port):
        return p.master_port
    with socket.socket() as s:
        s.bind(("", 0))
        port = int(s.getsockname()[1])
    log.info("train: port %d is taken on this node; torchrun uses free port %d instead", p.master_port, port)
    return port


def error_class(name: str) -> type[RagtuneError]:
    """The RagtuneError class of that name (a worker's error comes back as its class, with its exit code)."""
    todo: list[type[RagtuneError]] = [RagtuneError]
    while todo:
        cls = todo.pop()
        if cls.__name__ == name:
            return cls
        todo += cls.__subclasses__()
    return RagtuneError


def failure(returncode: int, error: dict | None, log_file: Path, p: TrainParams) -> RagtuneError:
    """One error for a failed launch: a worker's expected error as its own class, anything else as LaunchError."""
    world = p.processes * p.nnodes
    if error:
        cls = error_class(error.get("type", ""))
        return cls(f"{error['message']} (rank {error.get('rank', '?')} of {world}; full output in {log_file})")
    return LaunchError(
        f"train: the {world} training processes exited with status {returncode}. Their output, with the "
        f"traceback, is in {log_file}. Fix what it shows, or run with train.processes=1 train.nnodes=1 to train "
        "in this process and see the error here."
    )


def train_launched(
    ws: Layout, params: Params, output_dir: Path, run_key: str, adapter_dir: Path, on_progress: OnProgress = None
) -> dict | None:
    """Run train_lora under torchrun; return rank 0's result, or None where rank 0 ran on another node."""
    files = launch_files(ws)
    files.folder.mkdir(parents=True, exist_ok=True)
    for stale in (files.progress, files.result, files.error):
        stale.unlink(missing_ok=True)
    job = {
        "root": str(ws.root),
        "params": params.as_dict(),
        "run_key": run_key,
        "output_dir": str(output_dir),
        "adapter_dir": str(adapter_dir),
    }
    write_json(files.job, job)
    p = params.train
    cmd = launch_command(p, files.job, rendezvous_port(p), sys.executable, run_key)
    log.info("train: %s; output in %s", " ".join(cmd), files.log)
    seen: tuple[int, int] | None = None
    with files.log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env(dict(os.environ)))
        try:
            while proc.poll() is None:
                time.sleep(POLL_S)
                seen = forward_progress(files.progress, seen, on_progress)
        except BaseException:  # Ctrl-C or a cancelled flow: torchrun stops its workers on SIGTERM
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    forward_progress(files.progress, seen, on_progress)
    if proc.returncode != 0:
        raise failure(proc.returncode, read_optional(files.error), files.log, p)
    result = read_optional(files.result)
    if result is None and p.nnodes == 1:
        raise failure(proc.returncode, None, files.log, p)
    return result


def read_optional(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def forward_progress(path: Path, seen: tuple[int, int] | None, on_progress: OnProgress) -> tuple[int, int] | None:
    """Pass rank 0's latest (done, total) on when it changed."""
    got = read_optional(path)
    if not got or not on_progress:
        return seen
    now = (int(got["done"]), int(got["total"]))
    if now != seen:
        on_progress(*now)
    return now


def main(job_path: Path) -> int:
    """One torchrun worker: train the job; rank 0 writes the progress and the result."""
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO, format=f"[rank {rank}] %(message)s", stream=sys.stderr)
    logging.getLogger("ragtune").setLevel(logging.INFO)
    files = LaunchFiles(job_path.parent)
    job = json.loads(job_path.read_text(encoding="utf-8"))
    params = Params.model_validate(job["params"])
    ws = Layout(Path(job["root"]))
    main_rank = is_main_process()

    def report(done: int, total: int) -> None:
        write_json(files.progress, {"done": done, "total": total})

    try:
        meta = read_json(ws.dataset_meta, "build_dataset")
        rows = {n: read_jsonl(ws.train_dir / f"{n}.jsonl", "build_dataset") for n in ("train", "eval")}
        result = train_lora(
            ws.root,
            rows,
            meta,
            params.model,
            params.train,
            Path(job["output_dir"]),
            job["run_key"],
            Path(job["adapter_dir"]),
            report if main_rank else None,
        )
    except RagtuneError as exc:
        write_json(files.error, {"type": type(exc).__name__, "message": str(exc), "rank": rank})
        log.error("train: %s", exc)
        return 1
    if main_rank:
        write_json(files.result, result)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
