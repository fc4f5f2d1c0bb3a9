"""The README's and docs/' command lines run as written from the repo root of a checkout: our command through the
launcher (``./void-pipeline``) in a fresh shell's environment, make targets that exist, scripts that are there."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from void_pipeline.lib.layout import REPO_ROOT
from void_pipeline_tests.support.documented import (
    LAUNCHER,
    by_program,
    fresh_shell_environment,
    leading_words,
    makefile_targets,
)

# Programs the docs name that run elsewhere or are the shell's own, and why they are not run here.
ELSEWHERE = {
    "letta": "the operator's own Letta install (the letta environment here is the test's)",
    "docker": "the GPU host's Docker Engine (docs/production.md)",
}
SHELL_BUILTINS = {"export", "command", "cd", "source", "."}
# a floor, so that a broken extraction cannot pass with nothing found (found when written: 34 and 80)
MIN_LAUNCHER_LINES = 30
MIN_MAKE_LINES = 70


def test_the_launcher_is_the_command_itself_from_any_folder(tmp_path: Path) -> None:
    """From another folder, in a fresh shell's environment: the command's exit status (serve status: 3 when down),
    its output and nothing of the launcher's, as the package's own module gives them."""
    argv = ["serve", "status", "--data", str(tmp_path / "data")]
    launched = subprocess.run([str(REPO_ROOT / "void-pipeline"), *argv], cwd=tmp_path, env=fresh_shell_environment(tmp_path),
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    direct = subprocess.run([sys.executable, "-m", "void_pipeline", *argv], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120, check=False)  # fmt: skip
    assert launched.returncode == 3, launched.stderr
    assert launched.stdout.startswith("down\n")
    assert (launched.stdout, launched.stderr) == (direct.stdout, direct.stderr)


def test_the_docs_name_only_make_targets_scripts_and_programs_that_exist(tmp_path: Path) -> None:
    grouped = by_program()
    assert len(grouped.get(LAUNCHER, [])) >= MIN_LAUNCHER_LINES
    assert len(grouped.get("make", [])) >= MIN_MAKE_LINES
    targets = makefile_targets()
    assert {"setup", "demo", "ui", "mlflow-ui"} <= targets  # the parse itself
    missing = [f"{c.where}: make {t}" for c in grouped.pop("make") for t in c.make_targets if t not in targets]
    assert missing == []
    grouped.pop(LAUNCHER)
    wrong = []
    for program, commands in grouped.items():
        if program in ELSEWHERE or program in SHELL_BUILTINS:
            continue
        if program == "python3":  # the machine's own interpreter: a standard-library script or module of ours
            for command in commands:
                argv = list(command.words[1:3] if command.words[1] == "-m" else command.words[1:2])
                ran = subprocess.run(["python3", *argv, "--help"], cwd=REPO_ROOT, env=fresh_shell_environment(tmp_path),
                                     capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
                if ran.returncode != 0:
                    wrong.append(f"{command.where}: python3 {' '.join(argv)} --help: {ran.stderr.strip()[-300:]}")
            continue
        script = REPO_ROOT / program
        if "/" in program and script.is_file() and os.access(script, os.X_OK):
            continue
        wrong += [f"{c.where}: {program} is not ours, not in the repo, and not said to run elsewhere" for c in commands]
    assert wrong == []


@pytest.mark.integration  # ~20 launcher runs, each importing the pipeline's CLI (the test world's: ~6 s each here)
def test_each_documented_command_shows_its_help_through_the_launcher(tmp_path: Path) -> None:
    """``./void-pipeline SUBCOMMAND… --help`` for each documented line (its arguments dropped), in a fresh shell's
    environment: exit 0 and the usage line of that subcommand. A renamed subcommand exits 2 (argparse's invalid
    choice); a wrong interpreter cannot import the package. Leading lower-case words that are a positional value
    (``export handle``) show the subcommand's usage, whose words must then be a prefix of them."""
    paths = sorted({c.subcommand_path for c in by_program()[LAUNCHER]})
    assert ("serve", "up") in paths and ("testworld", "devnet", "env") in paths

    env = fresh_shell_environment(tmp_path)  # once, before the threads: making its python3 link is not thread-safe

    def show_help(path: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([LAUNCHER, *path, "--help"], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=180, check=False)  # fmt: skip

    with ThreadPoolExecutor(max_workers=4) as pool:  # each one mostly imports: as many at once as there are cores
        runs = list(pool.map(show_help, paths))
    wrong = []
    for path, ran in zip(paths, runs, strict=True):
        shown = " ".join(path)
        if ran.returncode != 0:
            wrong.append(f"{shown}: exit {ran.returncode}: {ran.stderr.strip()[-400:]}")
            continue
        usage = leading_words(ran.stdout.split()[2:]) if ran.stdout.startswith("usage: void-pipeline") else None
        if usage is None:
            wrong.append(f"{shown}: no `usage: void-pipeline` line: {ran.stdout[:200]!r}")
        elif path[: len(usage)] != usage or (path and not usage):
            wrong.append(f"{shown}: usage shows `void-pipeline {' '.join(usage)}`")
    assert wrong == []
