"""A server that follows the registry: ``registry: triage@production`` in serve.yaml.

At start, and then every ``registry.poll_s`` seconds, the follower reads the aliases it follows
(one small SELECT on the registry; SQLite in WAL mode, so ``taskfit promote`` never waits for it).
When an alias has moved, the new version is loaded beside the old one under its own version id
(a PEFT adapter named by the id, or a classical model), between two batches, and only then is the
served name pointed at it: a request resolves its model once, when it arrives, so a request in
flight finishes on the version it started with, and every response and log row names the version
that answered. A version that fails to load is logged and the old one keeps serving.

The candidate alias serves beside production in one of two ways: in **shadow**, it answers every
request in the background (its answers are logged with ``shadow_of`` and counted for agreement
with production, never returned); as a **canary**, a fixed share of callers, chosen by a hash of
the caller (the request's ``user``, else the API key's name, else the client address), is
answered by it, always the same callers.

Versions already loaded stay loaded (a rollback is then a pointer move); a LoRA version costs its
adapter's megabytes. A server started on classical versions alone loads the base language model
when the first adapter version arrives (:meth:`taskfit.serve.engine.Engine.load_base`).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from taskfit.errors import TaskfitError
from taskfit.lifecycle.registry import Registry, Version, parse_ref

log = logging.getLogger("taskfit.serve")


@dataclass
class Followed:
    """One served name that follows ``name@alias`` (and, for shadow or canary, ``name@candidate``)."""

    public: str
    name: str
    alias: str
    spec: Any  # its AdapterSpec: threshold and fallback over the version's own
    versions: dict[str, str] = field(default_factory=dict)  # alias -> version id being served
    candidate: Any = None  # the Served of name@candidate, for shadow or canary


class RegistryFollower:
    """Keeps each followed name on the version its alias points at (see the module docstring)."""

    def __init__(self, spec: Any, status: Any = lambda m: None, engine: Any = None):
        self.engine, self.spec, self.status = engine, spec, status  # the engine may be attached later
        self.registry = Registry.existing(spec.registry.path)
        self.followed: dict[str, Followed] = {}
        for public, entry in spec.followed.items():
            name, alias = parse_ref(entry.registry)
            self.followed[public] = Followed(public, name, alias, entry)
        self.loaded: dict[tuple[str, str], Any] = {}  # (public name, version id) -> Served
        self.failed: set[tuple[str, str]] = set()  # versions that would not load: not tried again
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one sync at a time (the poller, or a test calling sync)

    # ---- before the engine loads -------------------------------------------------------------
    def _wanted(self, f: Followed) -> dict[str, Version]:
        """The versions ``f`` serves now: its alias's, and the candidate's for shadow or canary."""
        from taskfit.errors import ConfigError

        out = {}
        aliases = [f.alias] + (["candidate"] if f.spec.shadow or f.spec.canary else [])
        for alias in aliases:
            version = self.registry.resolve(f.name, alias)
            if version is not None:
                out[alias] = version
            elif alias == f.alias:
                raise ConfigError(f"{f.name}@{alias} is not set in {self.registry.path}",
                                  hint=f"`taskfit promote DIR --as {f.name} --alias {alias}` sets it")
        return out

    def base_model(self) -> str | None:
        """The base model the followed adapter versions need: that of the versions served now, else
        that of any registered adapter version of the names (so a later promotion can load)."""
        from taskfit.errors import ConfigError

        now = {v.base_model for f in self.followed.values() for v in self._wanted(f).values()
               if v.kind == "adapter" and v.base_model}
        if len(now) > 1:
            raise ConfigError(f"the followed versions were trained on different base models ({sorted(now)})",
                              hint="serve one base model per server")
        if now:
            return now.pop()
        every = [v.base_model for f in self.followed.values() for v in self.registry.versions(f.name)
                 if v.kind == "adapter" and v.base_model]
        return every[-1] if every else None

    # ---- loading and switching ------------------------------------------------------------------
    def _load(self, f: Followed, version: Version) -> Any:
        """The Served of ``version`` under ``f.public`` (loaded once, when no batch runs)."""
        key = (f.public, version.id)
        if key in self.loaded:
            return self.loaded[key]
        from taskfit.serve.config import AdapterSpec, ClassicalSpec

        settings = {"confidence_threshold": f.spec.confidence_threshold, "fallback": f.spec.fallback}
        self.status(f"loading {f.name} version {version.short} for {f.public}")
        if version.kind == "classical":
            from taskfit.serve.classical import load_served

            served = load_served(f.public, ClassicalSpec(path=version.path, **settings))
        else:
            from taskfit.serve.engine import _run_task

            if self.engine.tokenizer is None:  # started on classical versions alone: the base model now
                from taskfit.errors import ConfigError

                if not version.base_model:
                    raise ConfigError(f"{f.name} version {version.short} is an adapter whose base model the "
                                      "registry does not name", hint="promote the run again with this taskfit")
                self.status(f"loading base model {version.base_model} for {f.name}'s first adapter version")
                self.engine.between_batches(lambda: self.engine.load_base(version.base_model))
            spec = AdapterSpec(path=version.path, **settings)
            served = self.engine.between_batches(
                lambda: self.engine.load_adapter(f.public, spec, _run_task(version.path), adapter=f"v-{version.id}"))
        served.version = version.id
        self.loaded[key] = served
        return served

    def sync(self) -> list[str]:
        """Load what the aliases point at now and switch to it; what moved, in words."""
        moved = []
        with self._lock:
            for f in self.followed.values():
                wanted = self._wanted(f)
                if {a: v.id for a, v in wanted.items()} == f.versions:
                    continue
                if any((f.public, v.id) in self.failed for v in wanted.values()):
                    continue
                try:  # load first, then switch
                    served = {alias: self._load(f, v) for alias, v in wanted.items()}
                except Exception:
                    self.failed.update((f.public, v.id) for v in wanted.values() if (f.public, v.id) not in self.loaded)
                    raise
                self.engine.models[f.public] = served[f.alias]
                f.candidate = served.get("candidate")
                for alias, version in wanted.items():
                    if f.versions.get(alias) != version.id:
                        moved.append(f"{f.public}: {f.name}@{alias} is now {version.short}")
                f.versions = {a: v.id for a, v in wanted.items()}
        for line in moved:
            log.info(line)
        return moved

    # ---- requests ---------------------------------------------------------------------------------
    def follows(self, public: str) -> bool:
        return public in self.followed

    def route(self, served: Any, caller: str) -> Any:
        """The Served that answers a request to ``served``'s name from ``caller``: the candidate
        for a canary's share of callers, else ``served``."""
        f = self.followed.get(served.name)
        if f is None or not f.spec.canary or f.candidate is None:
            return served
        digest = hashlib.sha256(f"{f.public}\0{caller}".encode()).digest()
        return f.candidate if int.from_bytes(digest[:8], "big") / 2 ** 64 < f.spec.canary else served

    def shadow(self, served: Any) -> Any:
        """The candidate that answers in shadow beside ``served`` (None: no shadow, or the same version)."""
        f = self.followed.get(served.name)
        if f is None or not f.spec.shadow or f.candidate is None or f.candidate.version == served.version:
            return None
        return f.candidate

    # ---- the poller -------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._poll, name="taskfit-registry", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.spec.registry.poll_s):
            try:
                self.sync()
            except TaskfitError as exc:  # said in one line; the old version keeps serving
                log.error("could not switch to the registry's version: %s%s", exc.message,
                          f" ({exc.hint})" if exc.hint else "")
            except Exception:  # the old version keeps serving; the next poll tries again
                log.exception("could not switch to the registry's version")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.registry.close()
