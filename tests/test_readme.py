"""The README and the lecture companion (docs/lecture.md) as the program behaves: every
``$ command`` in their fenced blocks is run, and its output must be the block's next lines
(up to the next ``$``), with doctest's ellipsis: ``...`` stands for any text where numbers
vary. A block right after the comment ``<!-- readme: not run ... -->`` (minutes of
training) is shown, not run. The ``>>>`` examples run as doctests."""

from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "docs" / "lecture.md"]
SKIP = re.compile(r"<!-- readme: not run")


def examples() -> list[tuple[str, str, str]]:
    """``(file:line, command, expected output)`` of every ``$`` line in the documents' blocks."""
    return [e for doc in DOCS for e in _examples(doc)]


def _examples(doc: Path) -> list[tuple[str, str, str]]:
    lines = doc.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        if not lines[i].startswith("```"):
            i += 1
            continue
        start = i
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        block = lines[start + 1 : end]
        if not SKIP.match(before):
            cmds = [k for k, line in enumerate(block) if line.startswith("$ ")]
            for a, b in zip(cmds, [*cmds[1:], len(block)][: len(cmds)], strict=True):
                where = f"{doc.name}:{start + 2 + a}"
                found.append((where, block[a][2:].split("  #")[0].strip(), "\n".join(block[a + 1 : b])))
        i = end + 1
    return found


def test_the_readme_has_commands_to_check() -> None:
    assert len(examples()) >= 3


@pytest.mark.parametrize(("line", "command", "expected"), examples(), ids=[e[0] for e in examples()])
def test_readme_command(line: str, command: str, expected: str, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    checker = doctest.OutputChecker()
    ok = checker.check_output(expected.rstrip() + "\n", done.stdout.rstrip() + "\n", doctest.ELLIPSIS)
    assert ok, f"{line}: `{command}` printed\n{done.stdout}\ninstead of\n{expected}"


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_python_examples(doc: Path) -> None:
    result = doctest.testfile(str(doc), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and (doc.name == "README.md" or result.attempted >= 10)
