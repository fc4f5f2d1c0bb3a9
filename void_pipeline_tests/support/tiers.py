"""The fast tier stays fast: a test without the ``integration`` marker may start helper processes (a CLI, a lock
holder) but no server, trainer, daemon, devnet, browser, Postgres, Letta or vLLM."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

from void_pipeline.lib import environments

# What starts one of those: a program (or a Python module run with -m), or a program with its first argument
SERVER_PROGRAMS = {
    "node", "postgres", "pg_ctl", "initdb", "chromium", "chromium-browser", "letta", "vllm",
    "dagster_webserver", "dagster-webserver", "dagster-daemon", "dagster_daemon", "vllm.entrypoints.openai.api_server",
}  # fmt: skip
SERVER_SUBCOMMANDS = {("dagster", "dev"), ("dg", "dev"), ("void_pipeline", "ui"), ("void_pipeline", "review")}
# the cached environments other than the orchestrator's (trainer, server, letta, devnet, ...): read once, as tests
# point the cache elsewhere to build throwaway environments of their own
ENVS = environments.cache_root() / "envs"


def integration_process(args: Any, shell: bool = False) -> str | None:
    """What in the command ``args`` only an integration test may start, or None."""
    if isinstance(args, (str, bytes, os.PathLike)):
        text = os.fsdecode(args)
        words = shlex.split(text) if shell else [text]
    else:
        words = [os.fsdecode(w) if isinstance(w, (bytes, os.PathLike)) else str(w) for w in args]
    # the command, one run under the process guard (spawn_group: ... -- command), a module run with -m
    commands = [words, *(words[i + 1 :] for i, w in enumerate(words) if w == "--")]
    commands += [c[2:] for c in commands if len(c) > 2 and c[1] == "-m"]
    for command in (c for c in commands if c):
        program = Path(command[0]).name
        if program in SERVER_PROGRAMS and command[1:] != ["--version"]:
            return program
        if (program, *command[1:2]) in SERVER_SUBCOMMANDS:
            return f"{program} {command[1]}"
        for word in command:
            path = Path(word)
            if path.is_relative_to(ENVS) and len(path.parts) > len(ENVS.parts):
                name = path.parts[len(ENVS.parts)]
                if not name.startswith("orchestrator-"):
                    return f"a program of the {name} environment"
    return None


class FastTierPopen(subprocess.Popen):  # type: ignore[type-arg]
    """``subprocess.Popen`` that refuses what only an integration test may start, naming it."""

    def __init__(self, args: Any, *more: Any, **options: Any) -> None:
        started = integration_process(args, bool(options.get("shell")))
        if started:
            raise AssertionError(
                f"a test without the integration marker started {started} ({args!r}): mark it "
                "@pytest.mark.integration, or start no server"
            )
        super().__init__(args, *more, **options)
