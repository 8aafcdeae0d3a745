"""Every command the README and docs/ show is one the tools accept: each ``corel-*`` line in a shell
block is parsed, and its subcommand and every ``--option`` it uses must be ones that command's
``--help`` lists (read from the same click command objects ``--help`` prints)."""
from __future__ import annotations

import importlib
import re
import shlex
import sys
from pathlib import Path

import pytest
import typer

from conftest import REPO
from corel_annotate.__main__ import BY_NAME
from corel_annotate.runtime.cli import DefaultCommandGroup

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

SHELL_BLOCK = re.compile(r"^```(?:bash|sh|shell|console)?\n(.*?)^```", re.S | re.M)
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def scripts() -> dict[str, str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return data["project"]["scripts"]


def command_of(script: str):
    """The typer app behind a console script (each enters ``corel_annotate/__main__.py``, which names it)."""
    module, attr = BY_NAME[script].app.split(":")
    return typer.main.get_command(getattr(importlib.import_module(module), attr))


def options_of(command) -> set[str]:
    out = {"--help"}
    for param in command.params:
        out.update(o for o in [*param.opts, *param.secondary_opts] if o.startswith("-"))
    return out


def shell_lines(text: str) -> list[str]:
    """Each logical line of the shell blocks: continuations joined, comments dropped."""
    lines = []
    for block in SHELL_BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def invocations(line: str) -> list[tuple[str, list[str]]]:
    """``(script, arguments)`` for every corel-* command of a shell line (pipes and && split it)."""
    try:
        tokens = shlex.split(line)
    except ValueError:
        return []
    found, current = [], None
    for token in tokens:
        if token in ("|", "&&", ";", "||") or token.startswith(">"):
            current = None
            continue
        name = token.rsplit("/", 1)[-1]
        if name in scripts():
            current = (name, [])
            found.append(current)
        elif current is not None:
            current[1].append(token)
    return found


def check(script: str, args: list[str]) -> list[str]:
    """What in one invocation the command does not accept (empty: all of it is accepted)."""
    command = command_of(script)
    if hasattr(command, "commands"):   # a group (typer vendors its own click)
        positional = [a for a in args if not a.startswith("-")]
        if isinstance(command, DefaultCommandGroup) and (not args or args[0] not in command.commands):
            command = next(iter(command.commands.values()))   # what the group runs without a command name
        elif not positional:
            return [] if any(a == "--help" for a in args) else [f"{script}: no subcommand"]
        else:
            sub = command.commands.get(positional[0])
            if sub is None:
                return [f"{script}: unknown subcommand {positional[0]!r} (has {sorted(command.commands)})"]
            command, args = sub, args[args.index(positional[0]) + 1:]
    known = options_of(command)
    takes_value = {o for param in command.params if not getattr(param, "is_flag", True) and not getattr(param, "count", False)
                   for o in param.opts}
    problems, skip = [], False
    for arg in args:
        if skip:   # the value of the option before it, whatever it looks like
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if arg.startswith("--") and name not in known:
            problems.append(f"{script}: unknown option {name}")
        skip = name in takes_value and "=" not in arg
    return problems


def test_the_checker_refuses_what_the_tools_refuse() -> None:
    assert check("corel-infer", ["photos/", "--model", "b.bundle", "--beam-width", "3"]) == []
    assert check("corel-infer", ["photos/", "--modle", "b.bundle"]) == ["corel-infer: unknown option --modle"]
    assert check("corel-memory", ["add", "B", "--data", "D", "-o", "N"]) == []
    assert check("corel-memory", ["append", "B"])[0].startswith("corel-memory: unknown subcommand")
    assert invocations("corel-train --data d && .venv/bin/corel-export x.ckpt -o y --force") == [
        ("corel-train", ["--data", "d"]), ("corel-export", ["x.ckpt", "-o", "y", "--force"])]


def test_the_docs_show_commands() -> None:
    shown = [inv for doc in DOCS for line in shell_lines(doc.read_text(encoding="utf-8")) for inv in invocations(line)]
    assert len(shown) >= 30
    assert {script for script, _ in shown} >= {"corel-train", "corel-export", "corel-infer", "corel-eval",
                                               "corel-web", "corel-serve", "corel-bench", "corel-memory"}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_documented_command_is_accepted(doc: Path) -> None:
    problems = [f"{doc.relative_to(REPO)}: {p}  [{line[:100]}]"
                for line in shell_lines(doc.read_text(encoding="utf-8"))
                for script, args in invocations(line) for p in check(script, args)]
    assert not problems, "\n".join(problems)
