"""The model registry: immutable versions, movable aliases, and the history of every move.

One SQLite file per project, ``<project>/registry.sqlite`` (beside the request log), with the
files of each version copied into ``<project>/registry/<name>/<version id>/`` so that a version
stays what it was when a run directory is deleted or a classical model is fitted again.

- A **version** is one trained adapter (or fitted classical model) registered under a name
  (``triage``). Its id is the digest of the files that decide its answers (the adapter's weights
  and configs, or the classical model's files): the same files are the same version. It records
  the base model, the data snapshot it was trained on (the prepared training and held-out splits'
  fingerprints), the label set it answers with (classify), and the held-out figures it was
  registered with. Versions are never changed or deleted (SQLite triggers refuse it).
- An **alias** (``triage@production``, ``triage@candidate``, as MLflow names them) points at one
  version and moves.
- The **history** holds every alias move, append-only: from which version to which, by whom,
  when, why, whether the promotion gate was overridden, and the gate's figures.

Nothing here loads a model or reads a project: :mod:`taskfit.lifecycle.promote` decides what
moves, :mod:`taskfit.lifecycle.serving` follows the aliases from a running server.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskfit.errors import ConfigError
from taskfit.serve.config import MODEL_NAME as NAME  # a registered name is served as a model name

FILE = "registry.sqlite"
STORE = "registry"  # the versions' files, beside the registry file
ALIASES = ("production", "candidate")

MIGRATIONS = [
    # 1: versions, aliases and the history of alias moves
    """
    CREATE TABLE versions (
        name TEXT NOT NULL,
        id TEXT NOT NULL,
        kind TEXT NOT NULL,
        path TEXT NOT NULL,
        source TEXT,
        task_kind TEXT,
        base_model TEXT,
        labels TEXT,
        data TEXT,
        figures TEXT,
        created REAL NOT NULL,
        created_by TEXT,
        PRIMARY KEY (name, id)
    );
    CREATE TABLE aliases (
        name TEXT NOT NULL,
        alias TEXT NOT NULL,
        version TEXT NOT NULL,
        moved REAL NOT NULL,
        PRIMARY KEY (name, alias)
    );
    CREATE TABLE history (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        alias TEXT NOT NULL,
        action TEXT NOT NULL,
        from_version TEXT,
        to_version TEXT NOT NULL,
        by TEXT,
        at REAL NOT NULL,
        reason TEXT,
        forced INTEGER NOT NULL DEFAULT 0,
        gate TEXT
    );
    CREATE INDEX history_name ON history(name, alias, seq);
    CREATE TRIGGER versions_immutable BEFORE UPDATE ON versions
        BEGIN SELECT RAISE(ABORT, 'registry versions are immutable'); END;
    CREATE TRIGGER versions_kept BEFORE DELETE ON versions
        BEGIN SELECT RAISE(ABORT, 'registry versions are never deleted'); END;
    CREATE TRIGGER history_append_only BEFORE UPDATE ON history
        BEGIN SELECT RAISE(ABORT, 'the registry history is append-only'); END;
    CREATE TRIGGER history_kept BEFORE DELETE ON history
        BEGIN SELECT RAISE(ABORT, 'the registry history is append-only'); END;
    """,
]


@dataclass(frozen=True)
class Version:
    """One registered version. ``path`` is absolute (stored relative to the registry's folder);
    ``kind`` is ``adapter`` (a training run: its adapter, config and manifest) or ``classical``;
    ``data`` holds the training and held-out fingerprints of the data it was trained on;
    ``figures`` the held-out metrics it was registered with (``main`` names the main one)."""

    name: str
    id: str
    kind: str
    path: Path
    source: str | None = None
    task_kind: str | None = None
    base_model: str | None = None
    labels: tuple[str, ...] | None = None
    data: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    figures: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    created: float = 0.0
    created_by: str | None = None

    @property
    def short(self) -> str:
        return self.id[:12]


@dataclass(frozen=True)
class Move:
    """One alias move, as the history keeps it."""

    seq: int
    name: str
    alias: str
    action: str  # promote | rollback
    from_version: str | None
    to_version: str
    by: str | None
    at: float
    reason: str | None
    forced: bool
    gate: dict[str, Any] | None = field(default=None, hash=False, compare=False)


def parse_ref(ref: str) -> tuple[str, str]:
    """``triage@production`` → (``triage``, ``production``); a ConfigError otherwise."""
    name, sep, alias = ref.partition("@")
    if not sep or not NAME.match(name) or alias not in ALIASES:
        raise ConfigError(f"registry: {ref!r} is not NAME@ALIAS",
                          hint=f"name a registered model and one of {', '.join(ALIASES)}, e.g. triage@production")
    return name, alias


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise ConfigError(f"--as {name!r}: a registered name is served as a model name: letters, digits and "
                          ". _ : - (64 at most)")
    return name


class Registry:
    """The registry file at ``path`` (created, or migrated forward, when opened)."""

    def __init__(self, path: Path):
        from taskfit.migrations import open_migrated

        self.path = path
        self.db = open_migrated(path, MIGRATIONS, "registry", "upgrade taskfit")
        self.db.row_factory = sqlite3.Row

    @classmethod
    def existing(cls, path: Path) -> "Registry":
        """The registry at ``path``, which must exist (reading commands never create one)."""
        if not path.is_file():
            raise ConfigError(f"{path}: no registry here",
                              hint="`taskfit promote DIR --as NAME` registers the first version and creates it")
        return cls(path)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def store(self) -> Path:
        return self.path.parent / STORE

    def version_dir(self, name: str, version_id: str) -> Path:
        return self.store / name / version_id

    # ---- versions -----------------------------------------------------------------------------
    def _version(self, row: sqlite3.Row) -> Version:
        path = Path(row["path"])
        return Version(name=row["name"], id=row["id"], kind=row["kind"],
                       path=path if path.is_absolute() else self.path.parent / path, source=row["source"],
                       task_kind=row["task_kind"], base_model=row["base_model"],
                       labels=tuple(json.loads(row["labels"])) if row["labels"] else None,
                       data=json.loads(row["data"] or "{}"), figures=json.loads(row["figures"] or "{}"),
                       created=row["created"], created_by=row["created_by"])

    def add(self, version: Version) -> Version:
        """Register ``version`` (its files already in :meth:`version_dir`); a version already
        registered under the name is kept as it was and returned."""
        known = self.version(version.name, version.id)
        if known is not None:
            return known
        try:
            path = str(version.path.relative_to(self.path.parent))
        except ValueError:
            path = str(version.path)
        with self.db:
            self.db.execute(
                "INSERT INTO versions (name, id, kind, path, source, task_kind, base_model, labels, data, figures, "
                "created, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (version.name, version.id, version.kind, path, version.source, version.task_kind,
                 version.base_model, json.dumps(list(version.labels)) if version.labels is not None else None,
                 json.dumps(version.data), json.dumps(version.figures), version.created or time.time(),
                 version.created_by))
        return self.version(version.name, version.id)  # type: ignore[return-value]

    def version(self, name: str, version_id: str) -> Version | None:
        """The version ``version_id`` of ``name`` (a unique prefix of its id will do)."""
        rows = self.db.execute("SELECT * FROM versions WHERE name = ? AND id LIKE ? ORDER BY created",
                               (name, version_id.replace("%", "") + "%")).fetchall()
        exact = [r for r in rows if r["id"] == version_id]
        if exact or len(rows) == 1:
            return self._version((exact or rows)[0])
        return None

    def versions(self, name: str | None = None) -> list[Version]:
        """Every version (of ``name``), oldest first."""
        sql, args = "SELECT * FROM versions", ()
        if name is not None:
            sql, args = sql + " WHERE name = ?", (name,)
        return [self._version(r) for r in self.db.execute(sql + " ORDER BY created, id", args)]

    def names(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT name FROM versions ORDER BY name")]

    def project_name(self, default: str) -> str:
        """The registered name a project's commands mean when none is named: ``default`` (its
        task.name) when that is registered or nothing is, else the one name registered (`taskfit
        promote DIR --as triage` on a project whose task.name is another); several others: an
        error naming them, so that retrain never starts a second lineage and promotes it past the
        gate for want of a production version to compare with."""
        names = self.names()
        if not names or default in names:
            return default
        if len(names) == 1:
            return names[0]
        raise ConfigError(f"{self.path}: registers {', '.join(names)}, and not {default} (task.name): "
                          "which one does this project serve?",
                          hint="set retrain.name in taskfit.yaml to it (taskfit serve DIR and taskfit retrain "
                               "read it), or name it: taskfit retrain DIR --as NAME")

    # ---- aliases ------------------------------------------------------------------------------
    def alias(self, name: str, alias: str) -> str | None:
        """The version id ``name@alias`` points at (None: the alias is not set)."""
        row = self.db.execute("SELECT version FROM aliases WHERE name = ? AND alias = ?", (name, alias)).fetchone()
        return row[0] if row else None

    def resolve(self, name: str, alias: str) -> Version | None:
        version_id = self.alias(name, alias)
        return self.version(name, version_id) if version_id else None

    def aliases(self, name: str) -> dict[str, str]:
        return {r[0]: r[1] for r in self.db.execute("SELECT alias, version FROM aliases WHERE name = ?", (name,))}

    def move(self, name: str, alias: str, to_version: str, *, action: str, by: str | None,
             reason: str | None, forced: bool = False, gate: dict[str, Any] | None = None,
             expect: str | None | bool = False) -> Move:
        """Point ``name@alias`` at ``to_version`` and append the move to the history, in one
        transaction. With ``expect`` (a version id, or None for an unset alias), the move is refused
        when another command moved the alias since it was read (the gate compared against that one)."""
        if alias not in ALIASES:
            raise ConfigError(f"alias {alias!r}: the aliases are {', '.join(ALIASES)}")
        if self.version(name, to_version) is None:
            raise ConfigError(f"{name}: no version {to_version} in {self.path}")
        now = time.time()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")  # no other writer between the read and the move
            current = self.alias(name, alias)
            if expect is not False and current != expect:
                raise ConfigError(f"{name}@{alias} moved to {current} while this command ran",
                                  hint="run the command again: it compares against the version there now")
            self.db.execute("INSERT INTO aliases (name, alias, version, moved) VALUES (?, ?, ?, ?) "
                            "ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version, moved = excluded.moved",
                            (name, alias, to_version, now))
            seq = self.db.execute(
                "INSERT INTO history (name, alias, action, from_version, to_version, by, at, reason, forced, gate) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, alias, action, current, to_version, by, now, reason, int(forced),
                 json.dumps(gate) if gate is not None else None)).lastrowid
        return Move(seq, name, alias, action, current, to_version, by, now, reason, forced, gate)

    # ---- history ------------------------------------------------------------------------------
    def history(self, name: str) -> list[Move]:
        """Every move of ``name``'s aliases, oldest first."""
        return [Move(r["seq"], r["name"], r["alias"], r["action"], r["from_version"], r["to_version"], r["by"],
                     r["at"], r["reason"], bool(r["forced"]), json.loads(r["gate"]) if r["gate"] else None)
                for r in self.db.execute("SELECT * FROM history WHERE name = ? ORDER BY seq", (name,))]

    def previous(self, name: str, alias: str = "production") -> str | None:
        """The version ``name@alias`` pointed at before its current one, skipping what rollbacks
        undid: after v1 → v2 → v3 and a rollback to v2, the next rollback goes to v1, not v3."""
        stack: list[str] = []
        for move in self.history(name):
            if move.alias != alias:
                continue
            if move.action == "rollback":
                while stack and stack[-1] != move.to_version:
                    stack.pop()
                if not stack:
                    stack.append(move.to_version)
            elif not stack or stack[-1] != move.to_version:
                stack.append(move.to_version)
        return stack[-2] if len(stack) > 1 else None
