"""SQLite files with a versioned schema (the request log, the registry): opened in WAL mode so
readers never block the writer, and migrated forward only. The schema version is SQLite's own
``PRAGMA user_version``; a file written by a newer taskfit is refused rather than guessed at."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Sequence

from taskfit.errors import ConfigError


def open_migrated(path: Path, migrations: Sequence[str], what: str, hint: str) -> sqlite3.Connection:
    """Open (creating or migrating) the SQLite file at ``path``: ``migrations[i]`` takes the schema
    from version ``i`` to ``i + 1``, each in one transaction. ``what`` names the file in the error
    a newer schema gets, ``hint`` says what to do then."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    migrate(db, path, migrations, what, hint)
    return db


def migrate(db: sqlite3.Connection, path: Path, migrations: Sequence[str], what: str, hint: str) -> None:
    """Take the open database ``db`` (the file at ``path``) forward to ``len(migrations)``; a
    newer schema closes it and raises (see :func:`open_migrated`)."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(migrations):
        db.close()
        raise ConfigError(f"{path}: this {what} has schema version {version}, written by a newer "
                          f"taskfit (this one knows {len(migrations)})", hint=hint)
    for number, script in enumerate(migrations[version:], start=version + 1):
        db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")
