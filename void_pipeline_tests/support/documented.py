"""The command lines the README and docs/ give the operator: every line of their shell code blocks (```bash, ```sh,
```console: its ``$ `` lines) and every inline code span that starts with our command or ``make``."""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from void_pipeline.lib.layout import REPO_ROOT

LAUNCHER = "./void-pipeline"
SHELL_FENCES = ("bash", "sh", "shell", "console")
FENCED = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`]+)`")
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")"}
REDIRECTIONS = {">", ">>", "<", ">&", "<&"}
SHELL_KEYWORDS = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class DocumentedCommand:
    where: str  # docs/serve.md:28
    words: tuple[str, ...]  # the program and its arguments, the variable assignments before it left out

    @property
    def make_targets(self) -> tuple[str, ...]:
        """The targets of a ``make`` line (its options and ``NAME=value`` variables left out)."""
        return tuple(w for w in self.words[1:] if not w.startswith("-") and "=" not in w)

    @property
    def subcommand_path(self) -> tuple[str, ...]:
        """Our command's leading subcommand words (``serve up``), up to the first option, placeholder or value."""
        return leading_words(self.words[1:])


def leading_words(words: Iterable[str]) -> tuple[str, ...]:
    """The words up to the first that is not a lower-case name: ``serve up`` of ``serve up [-h] --data DATA``."""
    taken: list[str] = []
    for word in words:
        if not re.fullmatch(r"[a-z][a-z0-9-]*", word):
            break
        taken.append(word)
    return tuple(taken)


def doc_files() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def shell_commands(line: str) -> list[list[str]]:
    """The simple commands of one shell line: split at ``;``, ``&&``, ``|``, …, keywords, redirections and
    assignments before the program left out; ``#`` comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote in prose: the plain words
        tokens = line.split("#", 1)[0].split()
    commands: list[list[str]] = [[]]
    skip_next = False
    for token in tokens:
        if skip_next:
            skip_next = False
        elif token in SEPARATORS:
            commands.append([])
        elif token in REDIRECTIONS:
            skip_next = True
        elif not commands[-1] and (token in SHELL_KEYWORDS or ASSIGNMENT.match(token)):
            continue
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def documented_commands() -> list[DocumentedCommand]:
    found: list[DocumentedCommand] = []
    for path in doc_files():
        text = path.read_text()
        name = str(path.relative_to(REPO_ROOT))

        def line_of(offset: int, text: str = text) -> int:
            return text.count("\n", 0, offset) + 1

        for fence in FENCED.finditer(text):
            if fence[1] not in SHELL_FENCES:
                continue
            lines = fence[2].replace("\\\n", " ").splitlines()
            first = line_of(fence.start(2))
            for number, line in enumerate(lines, first):
                if fence[1] == "console":
                    if not line.startswith("$ "):
                        continue
                    line = line[2:]
                for words in shell_commands(line):
                    found.append(DocumentedCommand(f"{name}:{number}", tuple(words)))
        prose = FENCED.sub(lambda m: "\n" * m[0].count("\n"), text)  # same line numbers, no code blocks
        for span in INLINE.finditer(prose):
            code = " ".join(span[1].split())
            if code.startswith(f"{LAUNCHER} ") or re.match(r"make [a-z]", code):
                for command in shell_commands(code)[:1]:
                    found.append(DocumentedCommand(f"{name}:{line_of(span.start(), prose)}", tuple(command)))
    return found


def by_program() -> dict[str, list[DocumentedCommand]]:
    grouped: dict[str, list[DocumentedCommand]] = {}
    for command in documented_commands():
        grouped.setdefault(command.words[0], []).append(command)
    return grouped


def makefile_targets() -> set[str]:
    text = (REPO_ROOT / "Makefile").read_text()
    return {t for line in re.findall(r"^([A-Za-z0-9_. -]+):(?!=)", text, re.M) for t in line.split()}


def fresh_shell_environment(folder: Path) -> dict[str, str]:
    """What a new login shell has: HOME and a PATH whose python3 is the interpreter the environments were built with
    (a link in ``folder``); no PYTHONPATH, no virtual environment."""
    bin_dir = folder / "fresh-shell-bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "python3").exists():
        (bin_dir / "python3").symlink_to(getattr(sys, "_base_executable", None) or sys.executable)
    return {"HOME": os.environ.get("HOME", "/root"), "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin"}
