"""Versions: every successful run becomes a git commit + tag whose outputs live in DVC (the one DVC/git interface).

A version is: `dvc commit` of the run's stages (dvc.lock now records exactly what the run produced), a git
commit of dvc.lock and the small metrics files, an annotated tag `kb/<time>` or `model/<version>` whose
message is the run's key metrics as JSON, and `dvc push` of the outputs to the default remote.
`ragtune pull TAG` fetches the tagged outputs back with `dvc get`, bit for bit.

DVC and git calls are serialized by a file lock under .dvc/tmp, so two runs never race for DVC's own lock.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from tasks.core.clock import utc_iso
from tasks.core.errors import ConfigError, VersionError
from tasks.core.stage import PROJECT, rel
from tasks.core.workspace import Layout, file_lock
from tasks.pipeline import GROUPS, STAGES, stage_names

log = logging.getLogger("ragtune")
L = PROJECT


def _git_files(kind: str) -> list[str]:
    """What a version commits to git: the small files DVC leaves to git (metrics, plots, cache: false outs) of the
    kind's stages, plus the run report."""
    stages = [s for s in STAGES.values() if s.group == kind]
    report = [rel(L.refresh_report)] if kind == "kb" else []
    return [*report, *(f for s in stages for f in (*s.metrics_files, *s.plots, *s.git_outs))]


KINDS = {kind: {"stages": list(stage_names(kind)), "git": _git_files(kind)} for kind in GROUPS}
# What `ragtune pull` fetches: the artifact a version is about and the reports that judge it. For a model, those are
# the metrics of the stages that make, evaluate or promote the candidate adapter.
KINDS["kb"]["pull"] = [rel(L.index_manifest), rel(L.refresh_report), rel(L.quality_report)]
KINDS["model"]["pull"] = [rel(L.candidate)] + [
    rel(L.stage_metrics(s.name)) for s in STAGES.values() if rel(L.candidate) in (*s.outs, *s.deps)
]


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name  # the venv's dvc, even when .venv/bin is not on PATH
    return str(here) if here.exists() else name


def check_model_versionable(ws: Layout) -> None:
    """A model version dvc-commits the build_dataset stage, whose deps include the knowledge base's outputs."""
    missing = [str(p.relative_to(ws.root)) for p in (ws.chunks, ws.index_manifest) if not p.exists()]
    if missing:
        raise VersionError(
            f"versioning.enabled: a model version records dvc.yaml's build_dataset stage, which depends on the "
            f"knowledge base ({', '.join(missing)} missing: no refresh has run here). Run `ragtune refresh` once "
            "first (it records a kb version too), or retrain with versioning.enabled: false. Nothing was trained."
        )


class Repo:
    """The project as a git + DVC repository."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def available(self) -> bool:
        return (self.root / ".git").exists() and (self.root / ".dvc").is_dir()

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        tool = _bin(cmd[0]) if cmd[0] == "dvc" else cmd[0]
        proc = subprocess.run([tool, *cmd[1:]], cwd=self.root, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise VersionError(f"`{' '.join(cmd)}` failed in {self.root}:\n{(proc.stderr or proc.stdout).strip()}")
        return proc

    def lock(self, wait_s: float = 600):
        """One DVC/git writer at a time across processes (DVC's own lock fails fast instead of waiting)."""
        return file_lock(
            self.root / ".dvc/tmp/ragtune-versioning.lock",
            wait_s,
            f"another ragtune run held the DVC lock for {wait_s:.0f} s; try again when it finishes.",
        )

    def has_remote(self) -> bool:
        return bool(self.run("dvc", "remote", "default", check=False).stdout.strip())

    def record(self, kind: str, name: str, summary: dict, push: bool = True) -> dict:
        """dvc commit + git commit + annotated tag (+ dvc push). Returns the version entry."""
        spec = KINDS[kind]
        tag = f"{kind}/{name}"
        with self.lock():
            if self.run("git", "rev-parse", "-q", "--verify", f"refs/tags/{tag}", check=False).returncode == 0:
                raise VersionError(f"version {tag} already exists; versions are immutable.")
            self.run("dvc", "commit", "-f", "-q", *spec["stages"])
            files = [f for f in ["dvc.lock", *spec["git"]] if (self.root / f).exists()]
            self.run("git", "add", "-f", *files)
            env_user = ["-c", "user.name=ragtune", "-c", "user.email=ragtune@localhost"]
            has_identity = self.run("git", "config", "user.email", check=False).stdout.strip()
            self.run(
                "git",
                *([] if has_identity else env_user),
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                f"{kind} version {name}",
                "--",
                *files,
            )
            entry: dict[str, Any] = {
                "version": tag,
                "kind": kind,
                "at": utc_iso(),
                "metrics": summary,
            }
            self.run("git", *([] if has_identity else env_user), "tag", "-a", tag, "-m", json.dumps(entry))
            pushed = self.push() if push else False
        entry["commit"] = self.run("git", "rev-parse", "--short", tag + "^{commit}").stdout.strip()
        entry["pushed"] = pushed
        log.info("version %s recorded (commit %s, pushed=%s)", tag, entry["commit"], pushed)
        return entry

    def push(self) -> bool:
        """Push the outputs of every tagged version still missing from the default remote (so a push that
        failed earlier is repaired by the next run). A failure is a warning: the version stays committed and
        tagged, with its outputs in the local cache."""
        if not self.has_remote():
            log.warning("versioning: no default DVC remote configured; the version is committed and tagged only")
            return False
        proc = self.run("dvc", "push", "--all-tags", check=False)
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            reason = next((line for line in lines if line.startswith("ERROR")), lines[0] if lines else "no message")
            log.warning(
                "versioning: dvc push failed (%s); outputs stay in the local cache and the next "
                "versioned run pushes them",
                reason[:300],
            )
            return False
        return True

    def versions(self, kind: str | None = None) -> list[dict]:
        """Tagged versions, newest first, with the metrics stored in each tag's message."""
        if not (self.root / ".git").exists():
            return []
        refs = [f"refs/tags/{k}/" for k in ([kind] if kind else list(KINDS))]
        out = self.run(
            "git", "for-each-ref", "--sort=-creatordate", "--format=%(refname:short)%00%(contents)%01", *refs
        ).stdout
        entries = []
        for record in out.split("\x01"):
            if "\x00" not in record:
                continue
            tag, message = record.strip("\n").split("\x00", 1)
            try:
                entry = json.loads(message.strip())
            except ValueError:
                entry = {"version": tag, "kind": tag.split("/")[0], "metrics": {}}
            entries.append(entry)
        return entries

    def pull(self, version: str, out: Path) -> list[Path]:
        """Fetch a version's outputs into `out` (same relative paths) with `dvc get . PATH --rev TAG`."""
        kind = version.split("/", 1)[0]
        if (
            kind not in KINDS
            or self.run("git", "rev-parse", "-q", "--verify", f"refs/tags/{version}", check=False).returncode != 0
        ):
            known = ", ".join(v["version"] for v in self.versions()[:5]) or "none yet"
            raise VersionError(f"no version '{version}'. Recent versions: {known} (see `ragtune versions`).")
        fetched = []
        for path in KINDS[kind]["pull"]:
            target = Path(out) / path
            if target.exists():
                raise ConfigError(f"--out: {target} exists; pull into an empty folder so nothing is overwritten.")
            target.parent.mkdir(parents=True, exist_ok=True)
            if self.run("git", "cat-file", "-e", f"{version}:{path}", check=False).returncode == 0:
                target.write_bytes(self.run_bytes("git", "show", f"{version}:{path}"))  # git-tracked: exact bytes
            else:
                self.run("dvc", "get", ".", path, "--rev", version, "-o", str(target.resolve()), "-q")
            fetched.append(target)
        return fetched

    def run_bytes(self, *cmd: str) -> bytes:
        proc = subprocess.run(list(cmd), cwd=self.root, capture_output=True)
        if proc.returncode != 0:
            raise VersionError(f"`{' '.join(cmd)}` failed: {proc.stderr.decode(errors='replace').strip()}")
        return proc.stdout
