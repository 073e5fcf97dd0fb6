"""``serve.yaml`` → typed server settings: what is served, who may call it, and the limits.

API keys are never stored: only their SHA-256 digest (a key is 32 random bytes, so a fast digest
is enough; ``taskfit serve-key`` makes one and prints the line to paste). Model names are looked
up in the served set and never touch the file system.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from taskfit.errors import ConfigError

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")  # no slashes, no "..": never a path
KEY_PREFIX = "tf-"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Fallback(_Spec):
    confidence_threshold: float | None = Field(
        None, ge=0.0, le=1.0,
        description="classify: below this confidence the reply is the fallback (default: the eval setting "
                    "the model was trained or fitted with).")
    fallback: str | None = Field(None, description="classify: the reply below the threshold (default: the "
                                                   "one the model was trained or fitted with).")


class AdapterSpec(_Fallback):
    path: Path | None = Field(None, description="A run directory of `taskfit train` (or the adapter directory "
                                                "inside it); or name a registry version with `registry`.")
    registry: str | None = Field(
        None, description="NAME@ALIAS (triage@production): serve the version the alias points at in the "
                          "registry (`registry.path`), and switch to the next version when the alias moves "
                          "(`taskfit promote`, `taskfit rollback`), without a restart.")
    shadow: bool = Field(False, description="registry NAME@production: NAME@candidate answers the same "
                                            "requests in the background; its answers are logged (shadow_of) "
                                            "and counted for agreement in /metrics, never returned.")
    canary: float | None = Field(None, gt=0.0, lt=1.0,
                                 description="registry NAME@production: this share of callers (sticky: by the "
                                             "request's user field, else the API key's name, else the client "
                                             "address) is answered by NAME@candidate.")

    @model_validator(mode="after")
    def _one_source(self) -> "AdapterSpec":
        if (self.path is None) == (self.registry is None):
            raise ValueError("an adapter names either path (a run directory) or registry (NAME@ALIAS)")
        if self.registry is not None:
            from taskfit.lifecycle.registry import parse_ref

            try:
                _, alias = parse_ref(self.registry)
            except ConfigError as exc:
                raise ValueError(exc.message) from None
            if (self.shadow or self.canary) and alias != "production":
                raise ValueError("shadow and canary run NAME@candidate beside NAME@production: name the "
                                 "production alias")
        elif self.shadow or self.canary:
            raise ValueError("shadow and canary follow the registry: name the adapter as registry: NAME@production")
        if self.shadow and self.canary:
            raise ValueError("choose shadow (the candidate answers in the background) or canary (it answers a "
                             "share of callers), not both")
        return self


class ClassicalSpec(_Fallback):
    path: Path = Field(description="A fitted classical candidate: <project>/baselines/<name> "
                                   "(tfidf-logreg, embeddings-logreg), as `taskfit baseline` saves it.")


class KeySpec(_Spec):
    name: str = Field(description="Who holds the key (logged with each request).")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 hex digest of the key.")
    models: list[str] | Literal["*"] = Field("*", description="Models this key may call; * = all.")


class Limits(_Spec):
    max_body_bytes: int = Field(65536, ge=1024, description="Largest request body accepted (413 above).")
    max_messages: int = Field(32, ge=1, description="Most messages in one request.")
    max_tokens: int = Field(512, ge=1, description="Largest max_tokens a request may ask for.")
    max_batch: int = Field(8, ge=1, description="Requests decoded together at most (a request joins the "
                                                 "running batch between two steps while it holds fewer).")
    gather: int = Field(
        1, ge=1, description="transformers engine: while a batch is decoding, waiting requests are read into "
                             "it (or classify requests scored) once this many wait (or as many as the batch has "
                             "room for), or once the oldest has waited gather_steps steps; 1 = at the next step. "
                             "A request to an idle server is read at once. Measured on 2 cores: 3 gave 1.04x "
                             "the throughput of 1 under 16 clients (docs/benchmarks.md).")
    gather_steps: int = Field(6, ge=0, description="transformers engine: the most decoding steps a waiting request "
                                                   "waits for its group to fill (see gather).")
    queue: int = Field(64, ge=1, description="Requests waiting at most; beyond it, 429 with Retry-After.")
    timeout_s: float = Field(120.0, gt=0, description="A request not answered within this gets 504.")
    context: int = Field(2048, ge=128, description="engine llama-cpp: tokens of context of one request (prompt + "
                                                   "reply); a served model's cache holds this times "
                                                   "min(max_batch, 4), shared by the requests it decodes "
                                                   "together.")


class LogSpec(_Spec):
    path: Path | None = Field(Path("requests.sqlite"), description="SQLite request log; null = no log.")
    redact: bool = Field(True, description="Redact PII and secrets in logged text (the data stage's "
                                             "detectors, with each served run's data.privacy settings).")
    retention_days: float | None = Field(30.0, gt=0, description="Rows older than this are deleted; null = keep.")


class RegistryLink(_Spec):
    path: Path = Field(Path("registry.sqlite"), description="The registry that `registry: NAME@ALIAS` "
                                                             "adapters follow (`taskfit promote` writes it).")
    poll_s: float = Field(1.0, gt=0, description="How often the server reads the aliases it follows (a "
                                                 "moved alias is served from the next request after its "
                                                 "version has loaded).")


class ServeSpec(_Spec):
    base: str | None = Field(None, description="The base model (name, Hugging Face id or directory); "
                                               "default: the base model the adapters were trained on.")
    base_name: str | None = Field(None, description="The name the base model is served under "
                                                    "(default: the model's short name).")
    adapters: dict[str, AdapterSpec] = Field(default_factory=dict, description="Name → adapter.")
    classical: dict[str, ClassicalSpec] = Field(
        default_factory=dict, description="Name → a fitted classical classifier (no language model needed; "
                                          "with no adapters and no base, none is loaded).")
    engine: Literal["transformers", "llama-cpp"] = Field(
        "transformers", description="transformers (batched; GPU when there is one) or llama-cpp (the GGUF "
                                    "base and GGUF LoRAs on llama.cpp's CPU kernels; pip install -e '.[llama]').")
    merged: bool = Field(False, description="Fold the single adapter into the base for the fastest path "
                                            "(the bare base is then not served).")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    keys: list[KeySpec] = Field(default_factory=list, description="API keys; none = no auth (loopback only).")
    admin: bool = Field(False, description="Enable /admin/adapters (load and unload adapters; admin keys only).")
    admin_keys: list[str] = Field(default_factory=list, description="Names of the keys allowed to use /admin.")
    limits: Limits = Limits()
    log: LogSpec = LogSpec()
    registry: RegistryLink = RegistryLink()
    threads: int | None = Field(None, ge=1, description="CPU threads for the model (default: all cores).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="engine transformers: what the model computes in, as train.dtype says for "
                            "training and evaluation: auto = bfloat16 weights on GPUs that support it; on a "
                            "CPU float32 weights, the forward passes under bfloat16 autocast where the CPU "
                            "multiplies bfloat16 natively. Set it as the project's train.dtype for the "
                            "answers its evaluation measured.")

    @field_validator("adapters", "classical")
    @classmethod
    def _names(cls, value: dict[str, Any], info: Any) -> dict[str, Any]:
        for name in value:
            if not MODEL_NAME.match(name):
                raise ValueError(f"{info.field_name}.{name}: a model name is letters, digits and . _ : - (64 at most)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "ServeSpec":
        if self.merged and self.engine == "llama-cpp":
            raise ValueError("merged: true is for the transformers engine (llama.cpp applies the GGUF LoRA itself)")
        if self.merged and len(self.adapters) != 1:
            raise ValueError("merged: true serves exactly one adapter")
        if self.followed and (self.merged or self.engine != "transformers"):
            raise ValueError("registry: adapters that follow the registry are served by the transformers "
                             "engine, unmerged (a promotion loads the new version beside the old one)")
        both = sorted(set(self.adapters) & set(self.classical))
        if both:
            raise ValueError(f"{', '.join(both)}: a name is either an adapter or a classical model, not both")
        if not self.keys and self.host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"host: {self.host} without keys would serve anyone on the network; "
                             "add keys (taskfit serve-key) or bind to 127.0.0.1")
        if self.admin and not self.admin_keys and self.keys:
            raise ValueError("admin: true needs admin_keys (names of keys allowed to load adapters)")
        return self

    @property
    def adapters_by_path(self) -> dict[str, AdapterSpec]:
        """The adapters named by their run directory."""
        return {name: a for name, a in self.adapters.items() if a.path is not None}

    @property
    def followed(self) -> dict[str, AdapterSpec]:
        """The adapters that follow a registry alias."""
        return {name: a for name, a in self.adapters.items() if a.registry is not None}


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def load_serve_config(path: Path | None, overrides: dict[str, Any] | None = None) -> ServeSpec:
    """Read ``serve.yaml`` (or nothing), apply command-line ``overrides``, validate, and resolve
    relative paths against the file's folder."""
    data: dict[str, Any] = {}
    root = Path.cwd()
    if path is not None:
        if not path.exists():
            raise ConfigError(f"{path}: no such file", hint="write one as in docs/serving.md")
        from taskfit.data.read import read_text

        try:
            data = yaml.safe_load(read_text(path, ConfigError)) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping")
        root = path.parent
    for key, value in (overrides or {}).items():
        if value not in (None, {}, []):
            data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    for section in ("adapters", "classical"):
        models = {}
        for name, spec in (data.get(section) or {}).items():  # a path, or a mapping with one
            spec = {"path": spec} if isinstance(spec, str) else dict(spec or {})
            if isinstance(spec.get("path"), str) and not Path(spec["path"]).is_absolute():
                spec["path"] = str(root / spec["path"])
            models[name] = spec
        data[section] = models
    for section in ("log", "registry"):
        value = data.get(section)
        if section == "registry" and value is None:
            value = data[section] = {"path": "registry.sqlite"}  # beside serve.yaml
        if isinstance(value, dict) and value.get("path") and not Path(value["path"]).is_absolute():
            value["path"] = str(root / value["path"])
    try:
        return ServeSpec.model_validate(data)
    except ValidationError as exc:
        from taskfit.config import _describe

        raise ConfigError(f"{path or 'serve settings'}: " + "; ".join(_describe(e) for e in exc.errors()),
                          hint="fix the key(s) named above") from None
