"""Process setup: a new project's Prefect database is seeded from the migrated template, once and whole."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

from flows import runtime


@pytest.fixture
def template(tmp_path, monkeypatch):
    path = tmp_path / "share/prefect-9.9.9.db"
    path.parent.mkdir()
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE alembic_version (version_num TEXT)")
        db.execute("INSERT INTO alembic_version VALUES ('head')")
    monkeypatch.setattr(runtime, "database_template", lambda: path)
    monkeypatch.delenv("PREFECT_API_DATABASE_CONNECTION_URL", raising=False)
    return path


def test_a_new_project_starts_from_the_template_and_an_existing_database_is_kept(tmp_path, template):
    home = tmp_path / "project/.prefect"
    home.mkdir(parents=True)
    assert runtime.seed_database(home)
    with closing(sqlite3.connect(home / "prefect.db")) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [("head",)]
    assert not list(home.glob("*.part")), "the copy lands whole under its final name"

    (home / "prefect.db").write_bytes(b"runs of this project")
    assert not runtime.seed_database(home)
    assert (home / "prefect.db").read_bytes() == b"runs of this project"


def test_no_template_or_another_database_means_prefect_migrates_as_usual(tmp_path, template, monkeypatch):
    home = tmp_path / ".prefect"
    home.mkdir()
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", "postgresql+asyncpg://db/prefect")
    assert not runtime.seed_database(home)
    monkeypatch.delenv("PREFECT_API_DATABASE_CONNECTION_URL")
    template.unlink()
    assert not runtime.seed_database(home) and not (home / "prefect.db").exists()


def test_a_configured_api_is_used_as_it_is(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    monkeypatch.setattr(runtime, "_api", None)
    runtime.start_temporary_api()
    assert runtime._api is None
    monkeypatch.delenv("PREFECT_API_URL")
    (tmp_path / "profiles.toml").write_text(
        'active = "team"\n[profiles.team]\nPREFECT_API_URL = "http://prefect.internal:4200/api"\n'
    )
    runtime.start_temporary_api()  # `prefect config set PREFECT_API_URL=...` counts too
    assert runtime._api is None and "PREFECT_API_URL" not in runtime.os.environ
    runtime.wait_for_api(["a.module.that.does.not.exist"])  # nothing started here: nothing to wait for or import
