"""The docs a newcomer reads stay true: the config reference matches the code, and no link is dead."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
import yaml

from taskfit.config import ProjectConfig
from taskfit.docs_reference import REGENERATE, _section_model, config_reference, main, undocumented_keys
from taskfit.project import template

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_config_reference_is_current():
    written = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert written == config_reference(), (
        f"docs/config.md is out of date with src/taskfit/config.py: run `{REGENERATE}` from the "
        "repository root and commit docs/config.md")


def test_every_config_key_has_a_description():
    assert undocumented_keys() == [], (
        "give these keys a Field(description=...) in src/taskfit/config.py, then run "
        f"`{REGENERATE}`: {undocumented_keys()}")


def _rows(reference: str) -> dict[str, str]:
    """Dotted key -> its table row, from the generated reference."""
    return {m.group(1): m.group(0) for m in re.finditer(r"^\| `([^`]+)` \|.*$", reference, re.M)}


def _flatten(doc: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in doc.items():
        path = f"{prefix}{key}"
        keys += _flatten(value, path + ".") if isinstance(value, dict) and value else [path]
    return keys


@pytest.mark.parametrize("kind", ["classify", "extract", "qa", "generate"])
def test_every_key_init_writes_is_in_the_reference(kind):
    # A key's row covers what lies under it (task.schema.properties is the schema, not a key);
    # a section left empty (data.columns: null) is covered by its heading.
    reference = config_reference()
    rows = {**_rows(reference), **dict.fromkeys(re.findall(r"^#{2,4} `([^`]+)`$", reference, re.M), "")}
    keys = _flatten(yaml.safe_load(template(kind)))
    assert len(keys) > 20
    uncovered = [k for k in keys if not any(".".join(k.split(".")[:n]) in rows
                                            for n in range(1, k.count(".") + 2))]
    assert uncovered == []


def _literals(annotation) -> list:
    """The Literal types in an annotation, itself or one level down (X | Literal[...], dict[Literal[...], Y])."""
    return [a for a in (annotation, *typing.get_args(annotation)) if typing.get_origin(a) is typing.Literal]


def test_reference_lists_every_allowed_value_and_default():
    rows = _rows(config_reference())
    checked = 0

    def walk(model, prefix):
        nonlocal checked
        for name, field in model.model_fields.items():
            key = prefix + (field.alias or name)
            section = _section_model(field.annotation)
            if section is not None:
                walk(section, key + ".")
                continue
            row = rows[key]
            for literal in _literals(field.annotation):
                assert all(f"`{choice}`" in row for choice in typing.get_args(literal)), row
                checked += 1
            if isinstance(field.default, (int, float, str)) and not isinstance(field.default, bool):
                assert f"`{field.default}`" in row.split(" | ")[2], row  # the default column

    walk(ProjectConfig, "")
    assert checked >= 10  # method, format, retriever, device, dtype, ... each listed in full


def test_regenerate_command_writes_the_reference(tmp_path):
    out = tmp_path / "config.md"
    main([str(out)])
    assert out.read_text(encoding="utf-8") == config_reference()


def _strip_code(text: str) -> str:
    """Markdown outside fenced blocks and inline code: what a reader sees as text and links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"),
                                                       flags=re.S | re.M), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_every_relative_link_points_to_an_existing_file_and_heading():
    assert len(PAGES) >= 8  # README.md and docs/: index, data, evaluation, training, serving, benchmarks, config
    dead = []
    checked = 0
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", _strip_code(page.read_text(encoding="utf-8"))):
            if re.match(r"[a-z]+:", target):  # https:, mailto: ... are not files here
                continue
            path_part, _, anchor = target.partition("#")
            dest = (page.parent / path_part).resolve() if path_part else page
            checked += 1
            if not dest.exists():
                dead.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                dead.append(f"{page.relative_to(ROOT)}: {target} (no heading #{anchor} in {dest.name})")
    assert checked >= 10
    assert dead == [], "dead links:\n" + "\n".join(dead)
