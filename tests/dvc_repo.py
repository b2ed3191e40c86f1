"""Turn a test workspace into a real git + DVC project (the stage code is copied in: dvc.yaml names it as deps)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).parent / "dvc")
GIT_USER = ["-c", "user.name=t", "-c", "user.email=t@example.com"]


def git_dvc_project(root: Path, remote: str | Path | None = None, commit: bool = False) -> Path:
    shutil.copytree(REPO / "tasks", root / "tasks", ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    for name in ("dvc.yaml", ".gitignore"):
        if not (root / name).exists():
            shutil.copy(REPO / name, root / name)
    cmds = [["git", "init", "-q"], [DVC, "init", "-q"], [DVC, "config", "core.analytics", "false"]]
    if remote is not None:
        cmds.append([DVC, "remote", "add", "-d", "store", str(remote)])
    if commit:
        cmds += [["git", "add", "-A"], ["git", *GIT_USER, "commit", "-qm", "project"]]
    for cmd in cmds:
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    return root
