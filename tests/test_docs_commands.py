"""Every `python -m analysis ...` command line in README.md and docs/**/*.md runs, as a user would run it.

The lines are taken from the documents themselves (fenced blocks, inline code), in document order, in one
scratch folder, so a command that reads a file an earlier one wrote (`compress --plan plan.json`) finds
it. Small settings stand in where a line would take minutes (fewer samples, runs and latency rounds; the
sweep just recorded instead of a new one for `plan suggest`), placeholders get real values (`ID` is a run
recorded before), and only the lines in `SKIP` are not run, each with its reason. Prose such as
"`--runtime eager,onnxruntime` on `evaluate`, `latency` ..." and inline `compress --save FILE` spans are
checked against each command's parser: a documented option that a command lacks fails here.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# docs/reference/cli.md is generated from the parser itself (its headings name bare commands, not lines to run).
DOCS = [
    ROOT / "README.md",
    *sorted(p for p in (ROOT / "docs").rglob("*.md") if p.parts[-2:] != ("reference", "cli.md")),
]
PREFIX = "python -m analysis "

# Lines not run, each with its reason (matched as a substring of the command line).
SKIP = {
    "--ray auto": "joins a running Ray cluster (network)",
    "ray://": "joins a running Ray cluster (network)",
    "--device cuda": "needs a GPU",
}
# Small settings: flag -> value, set (added or replaced) where the command takes the flag.
SMALL = {"--limit": "40", "--runs": "3", "--rounds": "2", "--max-samples": "64"}
PLACEHOLDERS = {"SPEC": "zoo:digits-cnn", "FILE": "out.json"}


def _parser():
    from analysis.cli.main import build_parser

    return build_parser()


def _subparsers(parser) -> dict:
    """'name' or 'group name' -> its ArgumentParser (e.g. 'evaluate', 'plan suggest', 'runs list')."""
    out = {}
    for action in parser._subparsers._group_actions:
        for name, sub in action.choices.items():
            out[name] = sub
            if sub._subparsers is not None:
                for child, p in _subparsers(sub).items():
                    out[f"{name} {child}"] = p
    return out


def _options(sub) -> set[str]:
    return {flag for action in sub._actions for flag in action.option_strings}


def _command_lines(text: str) -> list[str]:
    """`python -m analysis ...` lines of fenced blocks (continuations joined, comments cut) and of inline
    code, in document order."""
    found: list[tuple[int, str]] = []
    for block in re.finditer(r"```[a-z]*\n(.*?)```", text, re.S):
        joined = block.group(1).replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.strip()
            if line.startswith(PREFIX):
                found.append((block.start(), line.split(" #")[0].strip()))
    for span in re.finditer(r"`(python -m analysis [^`]+)`", text):
        found.append((span.start(), span.group(1).strip()))
    return [line for _, line in sorted(found, key=lambda item: item[0])]


def _documented_lines() -> list[tuple[str, str]]:
    return [(doc.name, line) for doc in DOCS for line in _command_lines(doc.read_text(encoding="utf-8"))]


def _expand(words: list[str]) -> list[str]:
    """Optional parts `[--model SPEC]` taken, alternatives `a|b|c` as the first, `[...]` dropped."""
    out = []
    for w in words:
        w = w.strip("[]")
        if not w or w == "...":
            continue
        out.append(w.split("|")[0])
    return out


def _command(words: list[str], known: dict) -> str | None:
    two = " ".join(words[:2])
    return two if two in known else (words[0] if words and words[0] in known else None)


def _small(words: list[str], options: set[str], scratch: Path) -> list[str]:
    words = list(words)
    for flag, value in SMALL.items():
        if flag not in options:
            continue
        if flag in words:
            words[words.index(flag) + 1] = value
        else:
            words += [flag, value]
    if words[:2] == ["plan", "suggest"] and "--sensitivity" not in words:
        sweep = scratch / "sensitivity.json"  # written by the README's sensitivity line just before
        if sweep.exists():
            words += ["--sensitivity", str(sweep)]
    return words


def _run_ids(kind: str | None = None) -> list[int]:
    code, out, err = _main(["runs", "list"] + (["--kind", kind] if kind else []))
    assert code == 0, err
    return [run["id"] for run in json.loads(out)["runs"]]


def _fill(words: list[str], again: list[str] | None) -> list[str]:
    """Placeholders replaced; `runs compare ID ID` takes compression runs, so where fewer than two were
    recorded, `again` (the last documented compress line) runs once more."""
    kind = "compression" if words[:2] == ["runs", "compare"] else None
    if kind and again and len(_run_ids(kind)) < words.count("ID"):
        assert _main(again)[0] == 0
    ids = iter(_run_ids(kind))
    out = []
    for w in words:
        if w == "ID":
            try:
                out.append(str(next(ids)))
            except StopIteration:
                pytest.fail("a documented `runs` line needs a recorded run, and none was recorded before it")
        else:
            out.append(PLACEHOLDERS.get(w, w))
    return out


def _main(argv: list[str]) -> tuple[int, str, str]:
    from analysis.cli.main import main

    # Standard output with a byte buffer under it, as a terminal's has (JSON is written as bytes).
    out, err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8"), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: an option the command does not take
            code = exc.code if isinstance(exc.code, int) else 2
    out.flush()
    return code, out.buffer.getvalue().decode("utf-8"), err.getvalue()


def test_documents_have_command_lines():
    lines = _documented_lines()
    assert len(lines) >= 10, lines  # the README's quick tour alone has more: the extraction works


# The user's own module the documents name (`mymodels:build`, `mymodels:two_towers`), in the folder the
# commands run from, as a user would have it.
MYMODELS = """
import torch
from torch import nn


class TwoTowers(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(128, 32), nn.Linear(64, 32), nn.Linear(64, 10)

    def forward(self, a, b):
        return self.head(torch.cat([torch.relu(self.a(a)), torch.relu(self.b(b))], dim=1))


def two_towers():
    return TwoTowers()


def build():
    return nn.Sequential(nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 10))
"""


def test_every_documented_command_line_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "store"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mymodels.py").write_text(MYMODELS)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))  # the loader adds the folder; undone after
    monkeypatch.delitem(__import__("sys").modules, "mymodels", raising=False)
    known = _subparsers(_parser())
    failures, ran, compress = [], 0, None
    for doc, line in _documented_lines():
        words = shlex.split(line[len(PREFIX) :])
        if not words or words[0].startswith("<"):
            continue  # `python -m analysis <command>`: a pattern, not a command line
        if any(marker in line for marker in SKIP):
            continue
        words = _expand(words)
        if words in (["--help"], ["-h"]):
            code = _main(words)[0]
            failures += [] if code == 0 else [f"{doc}: `{line}` exited {code}"]
            continue
        name = _command(words, known)
        if name is None:
            failures.append(f"{doc}: `{line}`: no such command")
            continue
        argv = _fill(_small(words, _options(known[name]), tmp_path), compress)
        code, out, err = _main(argv)
        compress = argv if name == "compress" and code == 0 else compress
        ran += 1
        if code != 0:
            failures.append(f"{doc}: `{line}` exited {code}: {err.strip().splitlines()[-1:]}")
        elif "--json" not in argv or argv[argv.index("--json") + 1] == "-":
            json.loads(out)  # the documented output is JSON on standard output
    assert not failures, "\n".join(failures)
    assert ran >= 10


def _prose_flags(text: str) -> list[tuple[str, str]]:
    """(command, flag) pairs the prose promises: "`--flag ...` on `a`, `b` and `c`" and inline spans that
    start with a command name, like `compress --save FILE`."""
    pairs = []
    flat = " ".join(text.split())
    for flag, cmds in re.findall(r"`(--[\w-]+)[^`]*` \(?on ((?:`[a-z ]+`(?:,? and |, | or )?)+)", flat):
        pairs += [(c, flag) for c in re.findall(r"`([a-z ]+)`", cmds)]
    for span in re.findall(r"`([a-z]+(?: [a-z]+)? --[^`]+)`", flat):
        words = span.split()
        pairs += [(" ".join(words[:2]), w.split("=")[0]) for w in words if w.startswith("--")]
        pairs += [(words[0], w.split("=")[0]) for w in words if w.startswith("--")]
    return pairs


def test_documented_options_exist():
    known = _subparsers(_parser())
    missing = []
    for doc in DOCS:
        pairs = _prose_flags(doc.read_text(encoding="utf-8"))
        by_command: dict[str, set[str]] = {}
        for command, flag in pairs:
            by_command.setdefault(command, set()).add(flag)
        for command, flags in by_command.items():
            if command not in known:
                continue  # a word that is not a command ("plan suggest" is, "runs compare" is)
            lacking = flags - _options(known[command])
            # A span like `plan suggest --methods ...` is listed under "plan" too: only the full name counts.
            if lacking and not any(f"{command} " in k for k in known if k != command):
                missing += [f"{doc.name}: `{command}` has no {flag}" for flag in sorted(lacking)]
    assert not missing, "\n".join(missing)
