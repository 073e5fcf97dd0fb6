"""What a user sees when something is wrong: through the `taskfit` command, one clear message that
names the file, line or field and what to do, the error's exit code, and never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from taskfit.cli.main import app

LABELS = ["billing", "refund", "shipping", "account_access"]


def _rows(n: int, labels=LABELS, accent: set[int] = frozenset(), **extra) -> list[str]:
    """Distinct ticket rows (no two near-duplicates); rows in ``accent`` carry an 'é'."""
    words = ["invoice", "parcel", "password", "refund", "courier", "login", "receipt", "delivery"]
    return [json.dumps({"messages": [
        {"role": "user", "content": f"{words[i % 8]} {words[(i * 3 + 1) % 8]} number {i * 7919 % 10007} "
                                    f"on order {i * 104729 % 99991}{' café' if i in accent else ''}"},
        {"role": "assistant", "content": labels[i % len(labels)]}], **extra}, ensure_ascii=False)
        for i in range(n)]


def _project(tmp_path: Path, model_dir: Path, content: bytes, name: str = "train.jsonl", **config) -> Path:
    project = tmp_path / "p"
    runner = CliRunner()
    assert runner.invoke(app, ["init", str(project)]).exit_code == 0
    doc = yaml.safe_load((project / "taskfit.yaml").read_text())
    doc["model"]["name"] = str(model_dir)
    doc["task"]["labels"] = LABELS
    doc["data"]["train"] = f"data/{name}"
    for section, values in config.items():
        doc[section].update(values)
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    (project / "data").mkdir(exist_ok=True)
    (project / "data" / name).write_bytes(content)
    return project


def _invoke(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output and not (
        result.exception and not isinstance(result.exception, SystemExit)), result.output
    return result


def test_data_check_quarantines_the_lines_that_are_not_utf8_and_says_how_to_fix_the_file(tmp_path, tiny_model_dir):
    rows = _rows(60, accent={7, 31})
    # Windows-1252 bytes on two lines; a byte-order mark and CRLF line endings elsewhere are fine.
    data = b"\xef\xbb\xbf" + b"\r\n".join(r.encode("cp1252" if "é" in r else "utf-8") for r in rows) + b"\r\n"
    project = _project(tmp_path, tiny_model_dir, data)
    result = _invoke("data", "check", project)
    assert result.exit_code == 0, result.output
    path = project / "data" / "train.jsonl"
    assert "60 rows read = 58 kept + 2 quarantined + 0 exact duplicates + 0 near-duplicates" in result.output
    column = rows[7].encode("cp1252").index(b"\xe9") + 1
    assert rows[31].encode("cp1252").index(b"\xe9") + 1 == column  # the same reason: said once, for both lines
    said = " ".join(result.output.split())
    assert (f"quarantined 2 rows ({path}:8, {path}:32): not UTF-8: byte 0xe9 ('é' in Windows-1252) at byte "
            f"{column} of the line; re-save the file as UTF-8") in said, said
    assert "2 rows are not UTF-8 and were quarantined" in result.output and "Re-save it as UTF-8" in result.output
    card = json.loads((project / "data_card.json").read_text())
    c = card["counts"]
    assert c["read"] == c["kept"] + c["quarantined"] + c["exact_duplicates"] + c["near_duplicates"] == 60
    assert card["quarantine"]["by_reason"] == {"not UTF-8": 2}


def test_data_check_shows_how_far_it_is_through_the_file_and_ends_at_its_end(tmp_path, tiny_model_dir):
    """A data check of a large file took minutes behind a bar with no end ("0/?", no time left):
    its end is now the file's lines, counted before reading it, and the bar reaches it (blank
    lines included), so the time left can be said."""
    rows = _rows(60)
    data = "\n".join(rows[:30]) + "\n\n" + "\n".join(rows[30:]) + "\n\n\n"  # 63 lines, 60 rows
    project = _project(tmp_path, tiny_model_dir, data.encode())
    result = _invoke("data", "check", project, "--no-tokens")
    assert result.exit_code == 0, result.output
    assert "checking data: started (63 to do)" in result.output, result.output
    assert "checking data: done, 63/63 after" in result.output
    assert "60 rows read = 60 kept" in result.output


def test_a_csv_saved_as_windows_1252_loses_only_its_accented_rows(tmp_path, tiny_model_dir):
    lines = ["text,label"] + [f"ticket {i} about order {i * 7919 % 10007}{' café' if i == 40 else ''},"
                              f"{LABELS[i % 4]}" for i in range(60)]
    project = _project(tmp_path, tiny_model_dir, "\r\n".join(lines).encode("cp1252"), name="t.csv",
                       data={"columns": {"input": "text", "target": "label"}, "dedup": {"near": False}})
    result = _invoke("data", "check", project, "--no-tokens")
    assert result.exit_code == 0, result.output
    assert "60 rows read = 59 kept + 1 quarantined" in result.output
    assert f"{project / 'data' / 't.csv'}:42: not UTF-8: byte 0xe9" in result.output


def test_a_taskfit_yaml_that_is_not_utf8_names_its_line(tmp_path, tiny_model_dir):
    project = _project(tmp_path, tiny_model_dir, "\n".join(_rows(20)).encode())
    config = project / "taskfit.yaml"
    lines = config.read_bytes().split(b"\n")
    config.write_bytes(b"\n".join(lines[:3] + [b"# caf\xe9 tickets"] + lines[3:]))
    result = _invoke("data", "check", project)
    assert result.exit_code == 2
    assert f"{config}:4: not UTF-8: byte 0xe9 ('é' in Windows-1252) at byte 6 of the line" in result.output
    assert "re-save the file as UTF-8" in result.output


def test_no_usable_rows_names_the_commonest_quarantine_reason(tmp_path, tiny_model_dir):
    rows = _rows(30, accent=set(range(30)))
    project = _project(tmp_path, tiny_model_dir, "\n".join(rows).encode("cp1252"))
    result = _invoke("data", "prepare", project)
    assert result.exit_code == 3
    assert "data/train.jsonl: only 0 usable rows of 30 read; at least 4 are needed to split" in result.output
    assert "the commonest quarantine reason is 'not UTF-8', on 30 of 30 quarantined rows" in result.output
    assert f"(first {project / 'data' / 'train.jsonl'}:1: not UTF-8: byte 0xe9" in result.output


def test_group_by_with_one_group_says_nothing_can_be_held_out(tmp_path, tiny_model_dir):
    project = _project(tmp_path, tiny_model_dir, "\n".join(_rows(20, meta={"customer": "acme"})).encode(),
                       data={"group_by": "customer"})
    result = _invoke("data", "prepare", project)
    assert result.exit_code == 3
    assert "data.group_by: all 20 rows are in one group ('acme')" in result.output
    assert "group by a column with at least two values" in result.output


def test_the_classical_baseline_with_one_class_says_so(tmp_path, tiny_model_dir):
    project = _project(tmp_path, tiny_model_dir, "\n".join(_rows(30, labels=["billing"])).encode())
    result = _invoke("baseline", project, "--only", "tfidf-logreg")
    assert result.exit_code == 3
    assert "tfidf-logreg: the training rows hold 1 class (billing); a classifier needs at least two" in result.output


def test_max_seq_length_too_short_for_the_system_prompt_names_the_row(tmp_path, tiny_model_dir):
    project = _project(tmp_path, tiny_model_dir, "\n".join(_rows(30)).encode(), train={"max_seq_length": 16})
    result = _invoke("baseline", project, "--only", "prompt-only")
    assert result.exit_code == 3
    assert f"{project / 'data' / 'train.jsonl'}:" in result.output
    assert "max_seq_length=16 is too short: even with its input cut, the row takes about" in result.output
    assert "raise train.max_seq_length above" in result.output


def test_a_chat_template_that_renders_the_prompt_differently_is_a_model_error(tmp_path, tiny_model_dir):
    model = tmp_path / "odd-template"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    # The generation prompt opens the assistant turn one way, a written assistant turn another.
    config["chat_template"] = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}{{'<|im_start|>bot\n' + m['content'] + "
        "'<|im_end|>\n'}}{% else %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}{{'<|im_start|>assistant\n'}}{% endif %}")
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    (model / "chat_template.jinja").unlink(missing_ok=True)
    project = _project(tmp_path, model, "\n".join(_rows(20)).encode())
    result = _invoke("data", "check", project)
    assert result.exit_code == 4, result.output
    assert "renders the prompt differently when an assistant answer follows" in result.output
    assert "chat_template" in result.output


@pytest.mark.parametrize("args", [["data", "check"], ["data", "prepare"]])
def test_a_bom_and_crlf_file_checks_and_prepares_cleanly(tmp_path, tiny_model_dir, args):
    data = b"\xef\xbb\xbf" + "\r\n".join(_rows(40)).encode() + b"\r\n"
    project = _project(tmp_path, tiny_model_dir, data)
    result = _invoke(*args, project)
    assert result.exit_code == 0, result.output
    assert "40 rows read = 40 kept + 0 quarantined" in result.output


def test_serving_on_llama_cpp_without_its_bindings_says_how_to_install_them_before_loading(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as on a machine where the extra is not installed
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump({"base": "no-such-model-anywhere", "engine": "llama-cpp",
                                                         "log": {"path": None}}))
    result = CliRunner().invoke(app, ["serve", str(tmp_path / "serve.yaml")])
    # the bindings are asked for first: not the unknown model, nor a load that fails later
    assert result.exit_code == 2 and "needs llama-cpp-python" in result.output, result.output
    assert 'pip install -e ".[llama]"' in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("group", [[], ["data"], ["review"], ["registry"]])
def test_each_command_summary_in_help_reads_as_one_sentence_not_cut_at_its_docstring_lines(group):
    """`taskfit --help` lists each command with its docstring's first paragraph: on a wide
    terminal each summary is one line, not the docstring's lines with a sentence cut between them."""
    result = CliRunner().invoke(app, [*group, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    panel = result.output.split("Commands")[1]
    rows = [line for line in panel.splitlines() if line.startswith("│")]
    # a command's row starts with its name; a summary cut over lines adds rows that start blank
    assert rows and all(row[1] == " " and row[2] != " " for row in rows), rows
