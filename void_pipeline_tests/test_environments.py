"""The setup mechanism: environments cached by the hash of their pins, rebuilt after an interrupted build."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from void_pipeline.lib import environments
from void_pipeline.lib.environments import COMPLETE_MARKER, SetupError, content_key, ensure, find_node, node_major
from void_pipeline.lib.layout import REPO_ROOT


@dataclass(frozen=True)
class CountingEnv:
    """A stand-in environment whose build writes its pins into the target and counts builds."""

    pins: Path
    builds: list[Path]
    fail: bool = False

    def path(self) -> Path:
        return environments.cache_root() / "envs" / f"counting-{content_key(self.pins.read_bytes())}"

    def build(self, target: Path) -> None:
        self.builds.append(target)
        target.mkdir(parents=True)
        (target / "pins.txt").write_bytes(self.pins.read_bytes())
        if self.fail:
            raise SetupError("network down")


@pytest.fixture
def counting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CountingEnv:
    monkeypatch.setenv("VOID_PIPELINE_CACHE", str(tmp_path / "cache"))
    pins = tmp_path / "pins.txt"
    pins.write_text("polars==1.0\n")
    env = CountingEnv(pins, [])
    monkeypatch.setitem(environments.ENVIRONMENTS, "counting", env)
    return env


def test_warm_setup_reuses_the_cached_build(counting: CountingEnv) -> None:
    first = ensure("counting")
    second = ensure("counting")
    assert first == second and len(counting.builds) == 1
    assert (first / COMPLETE_MARKER).exists()
    assert not str(first).startswith(str(REPO_ROOT))  # cached outside the repo


def test_changed_pins_build_a_new_environment_beside_the_old(counting: CountingEnv) -> None:
    old = ensure("counting")
    counting.pins.write_text("polars==2.0\n")
    new = ensure("counting")
    assert new != old and old.exists() and len(counting.builds) == 2
    assert (new / "pins.txt").read_text() == "polars==2.0\n"


def test_an_interrupted_build_is_redone_not_used(counting: CountingEnv) -> None:
    target = counting.path()
    target.mkdir(parents=True)
    (target / "half-written").write_text("")
    built = ensure("counting")
    assert not (built / "half-written").exists() and len(counting.builds) == 1


def test_a_failed_build_leaves_nothing_behind(counting: CountingEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    failing = CountingEnv(counting.pins, [], fail=True)
    monkeypatch.setitem(environments.ENVIRONMENTS, "counting", failing)
    with pytest.raises(SetupError, match="network down"):
        ensure("counting")
    assert not failing.path().exists()


def test_real_pins_exist_and_are_exact() -> None:
    pins = (environments.ENVS_DIR / "orchestrator.txt").read_text().split()
    assert pins and all("==" in line for line in pins)
    names = {line.split("==")[0].lower() for line in pins}
    assert {"dagster", "dagster-webserver", "polars", "httpx", "atproto", "mlflow"} <= names
    assert "torch" not in names


def test_node_is_22_or_newer() -> None:
    node = find_node()
    assert node_major(environments.node_version(node)) >= environments.MIN_NODE_MAJOR


def test_a_too_old_node_override_fails_with_a_clear_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "node"
    fake.write_text("#!/bin/sh\necho v20.20.2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("VOID_PIPELINE_NODE", str(fake))
    with pytest.raises(SetupError, match="not a Node >= 22"):
        find_node()


def test_node_version_parsing() -> None:
    assert node_major("22.23.5") == 22
    assert node_major("garbage") == 0


def test_prune_removes_only_builds_of_old_pins(counting: CountingEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(environments, "ENVIRONMENTS", {"counting": counting})  # no real (Node) env lookups
    old = ensure("counting")
    counting.pins.write_text("polars==3.0\n")
    new = ensure("counting")
    stranger = environments.cache_root() / "envs" / "someone-else-123"
    stranger.mkdir()
    removed = environments.prune()
    assert old in removed and not old.exists()
    assert new.exists() and stranger.exists()


def test_independent_environments_build_side_by_side(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    monkeypatch.setenv("VOID_PIPELINE_CACHE", str(tmp_path / "cache"))
    spans: dict[str, tuple[float, float]] = {}
    both_started = threading.Barrier(2, timeout=30)  # each build waits for the other to start: only concurrency passes

    @dataclass(frozen=True)
    class SlowEnv:
        name: str

        def path(self) -> Path:
            return environments.cache_root() / "envs" / f"{self.name}-0"

        def build(self, target: Path) -> None:
            started = time.monotonic()
            both_started.wait()
            target.mkdir(parents=True)
            spans[self.name] = (started, time.monotonic())

    monkeypatch.setitem(environments.ENVIRONMENTS, "one", SlowEnv("one"))
    monkeypatch.setitem(environments.ENVIRONMENTS, "two", SlowEnv("two"))
    built = environments.ensure_all(["one", "two"])
    assert [p.name for p in built] == ["one-0", "two-0"] and set(spans) == {"one", "two"}


def test_a_python_environment_is_filled_by_uv_from_the_pins_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    monkeypatch.delenv("VOID_PIPELINE_NO_UV", raising=False)
    pins = {
        line.split("==")[0].lower(): line for line in (environments.ENVS_DIR / "orchestrator.txt").read_text().split()
    }
    good = tmp_path / "good.txt"
    good.write_text(pins["orjson"] + "\n")
    target = tmp_path / "env"
    environments.PythonEnv("tiny", good).build(target)
    imported = subprocess.run([str(target / "bin" / "python"), "-c", "import orjson"], capture_output=True, check=False)
    assert imported.returncode == 0, imported.stderr
    assert not (target / "bin" / "pip").exists()  # uv made it, not venv + pip
    broken = tmp_path / "broken.txt"
    broken.write_text(pins["httpx"] + "\n")  # without httpcore, anyio, ...: the consistency check must refuse it
    with pytest.raises(SetupError):
        environments.PythonEnv("tiny", broken).build(tmp_path / "env2")


def test_pip_index_settings_reach_uv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    monkeypatch.setenv("PIP_FIND_LINKS", f"{wheels} {tmp_path / 'missing'}")
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple")
    args = environments.pip_index_args()
    assert ["--find-links", str(wheels)] == args[args.index(str(wheels)) - 1 : args.index(str(wheels)) + 1]
    assert str(tmp_path / "missing") not in args  # a folder that is not there is left out
    assert args[args.index("--index-url") + 1] == "https://mirror.example/simple"


def test_pip_installs_a_partly_hashed_pin_file_in_two_runs() -> None:
    """pip refuses a file where only some pins carry a hash (envs/llama-cpp.txt hashes its source archive alone):
    the pip fallback installs the unhashed pins first, then the hashed ones, every pin exactly once."""
    pins = "# a comment\nfoo==1.0\nbar==2.0 --hash=sha256:ab\n\nbaz==3.0\n"
    assert environments.pip_requirement_groups(pins) == [["foo==1.0", "baz==3.0"], ["bar==2.0 --hash=sha256:ab"]]
    assert environments.pip_requirement_groups("foo==1.0\n") == [["foo==1.0"]]
    llama = (environments.ENVS_DIR / "llama-cpp.txt").read_text()
    plain, hashed = environments.pip_requirement_groups(llama)
    assert [line.split("==")[0] for line in hashed] == ["llama-cpp-python"]
    assert all("--hash" not in line for line in plain) and len(plain) > 5
