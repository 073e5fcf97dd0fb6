"""The configuration reference, docs/config.md, generated from taskfit.config's own fields.

Every key of ``taskfit.yaml`` is declared once, in :mod:`taskfit.config`, with its type, its
default and a ``Field(description=...)``. This module walks :class:`~taskfit.config.ProjectConfig`
recursively and writes those facts as Markdown, so the reference cannot drift from the code:
``tests/unit/test_docs.py`` compares docs/config.md with :func:`config_reference` and fails, naming
the command below, when a field was added or changed without regenerating it.

    python -m taskfit.docs_reference            # writes docs/config.md (run from the repository root)
    python -m taskfit.docs_reference OUT.md     # or anywhere else
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from taskfit.config import ProjectConfig

REGENERATE = "python -m taskfit.docs_reference"

_HEADER = f"""\
# `taskfit.yaml` reference

<!-- Generated from src/taskfit/config.py by `{REGENERATE}`; do not edit by hand. -->

Every key `taskfit.yaml` accepts, section by section, with its type or allowed values, its default
and what it does. `taskfit init DIR --from FILE` writes the keys a task needs; every other key keeps
the default shown here. A wrong type, an unknown key, a value outside its choices or a missing
required key stops the command with one line naming the key, the value and what is allowed, for
example:

```
error: taskfit.yaml: train.learning_rate: got 'fast'; input should be a valid number, unable to parse string as a number
hint: fix the key(s) named above; `taskfit init` shows a valid file
```

Each run saves the file with every default filled in as `runs/<run>/config.resolved.yaml`.
"""

_SCALARS = {int: "integer", float: "number", str: "text", bool: "`true` or `false`", Any: "any value"}


def _strip_none(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (annotation, False)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) < len(typing.get_args(annotation)):
            return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), True
    return annotation, False


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (directly or optionally), else None."""
    inner, _ = _strip_none(annotation)
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def _type_text(annotation: Any) -> str:
    """A reader's name for a field's type: Literal choices listed, containers spelled out."""
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return f"`{args[0]}`" if len(args) == 1 else "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        inner, optional = _strip_none(annotation)
        if optional:
            return _type_text(inner)
        return ", or ".join(_type_text(a) for a in args)
    if origin is list:
        return f"list of {_type_text(args[0])}"
    if origin is dict:
        key, value = args
        if typing.get_origin(key) is Literal:
            return (f"mapping from a key ({', '.join(f'`{a}`' for a in typing.get_args(key))}) "
                    f"to {_type_text(value)}")
        return "mapping" if value is Any else f"mapping of {_type_text(key)} to {_type_text(value)}"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(field: FieldInfo) -> str:
    """The numeric limits pydantic enforces on a field, e.g. '≥ 1, ≤ 32'."""
    marks = ((annotated_types.Ge, "ge", "≥"), (annotated_types.Gt, "gt", ">"),
             (annotated_types.Le, "le", "≤"), (annotated_types.Lt, "lt", "<"))
    return ", ".join(f"{sign} {getattr(meta, attr)}" for meta in field.metadata
                     for cls, attr, sign in marks if isinstance(meta, cls))


def _value_text(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (list, dict)):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def _default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return _value_text(field.default_factory())
    if field.default is PydanticUndefined:
        return "required"
    return _value_text(field.default)


def _cell(text: str) -> str:
    """Table-cell safe: a pipe would end the cell, a newline the row, and outside code spans
    Markdown would take ``<EMAIL>`` for an HTML tag and hide it, and ``****89`` for emphasis."""
    spans = " ".join(text.split()).split("`")
    for i in range(0, len(spans), 2):  # even pieces lie outside backticks
        spans[i] = spans[i].replace("<", "&lt;").replace(">", "&gt;").replace("*", "\\*")
    return "`".join(spans).replace("|", "\\|")


def _key(name: str, field: FieldInfo) -> str:
    return field.alias or name


def _section(model: type[BaseModel], prefix: str, field: FieldInfo | None, out: list[str]) -> None:
    """Append the Markdown of one section (a pydantic model) and, after it, of its sub-sections."""
    if prefix:  # the root (ProjectConfig) has no heading of its own
        out.append(f"{'#' * min(prefix.count('.') + 2, 4)} `{prefix}`\n")
    intro = []
    doc = (model.__doc__ or "").strip() if prefix else ""
    if doc.startswith(model.__name__ + "("):  # pydantic's generated signature is no doc
        doc = ""
    if doc or (field is not None and field.description):
        intro.append(" ".join((doc or field.description).split()))  # the class says more, if it says
    if field is not None:
        if field.default is None:
            intro.append("Optional: absent by default.")
        elif field.default is PydanticUndefined and field.default_factory is None:
            intro.append("Required.")
    if intro:
        out.append(" ".join(intro) + "\n")
    rows, subsections = [], []
    for name, sub in model.model_fields.items():
        key = f"{prefix}.{_key(name, sub)}" if prefix else _key(name, sub)
        sub_model = _section_model(sub.annotation)
        if sub_model is not None:
            subsections.append((sub_model, key, sub))
            continue
        kind = _type_text(sub.annotation)
        if _strip_none(sub.annotation)[1]:
            kind += ", or empty"
        bounds = _bounds(sub)
        if bounds:
            kind += f" ({bounds})"
        rows.append(f"| `{key}` | {_cell(kind)} | {_cell(_default_text(sub))} | {_cell(sub.description or '')} |")
    if rows:
        out.append("| key | type / allowed values | default | what it does |")
        out.append("|---|---|---|---|")
        out.extend(rows)
        out.append("")
    for sub_model, key, sub in subsections:
        _section(sub_model, key, sub, out)


def undocumented_keys() -> list[str]:
    """Dotted keys of taskfit.yaml whose value field carries no description (sections excluded)."""
    missing: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            key = f"{prefix}{_key(name, field)}"
            sub_model = _section_model(field.annotation)
            if sub_model is not None:
                walk(sub_model, key + ".")
            elif not (field.description or "").strip():
                missing.append(key)

    walk(ProjectConfig, "")
    return missing


def config_reference() -> str:
    """The full text of docs/config.md for the current :class:`ProjectConfig`."""
    out = [_HEADER]
    _section(ProjectConfig, "", None, out)
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m taskfit.docs_reference",
                                     description="Write the taskfit.yaml reference (docs/config.md).")
    parser.add_argument("out", nargs="?", type=Path, default=Path("docs/config.md"),
                        help="where to write (default docs/config.md, from the repository root)")
    args = parser.parse_args(argv)
    if not args.out.parent.is_dir():
        parser.error(f"{args.out.parent}: no such directory (run from the repository root, or name the file)")
    args.out.write_text(config_reference(), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
