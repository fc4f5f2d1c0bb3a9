"""A real Letta server for the test world: letta 0.16.8 (the last release with the V1 REST API, the ``letta``
environment) on 127.0.0.1, with a PostgreSQL + pgvector of its own and its models from a vLLM server.

    with start_letta(work_dir, env={"OPENAI_API_KEY": vllm.api_key}) as letta:
        agent_id = import_agent_file(LettaApi(letta.url), af_path, endpoint_config(proxy.url + "/v1", ...))

What a start does, each step with the project's own lifecycle helpers:

- PostgreSQL from pgserver's binaries (they have pgvector) through ``throwaway_postgres``: a fresh cluster in a temp
  folder, TCP on loopback with a random password, stopped and deleted afterwards; ``CREATE EXTENSION vector``.
- The schema: the release's own migrations (``alembic upgrade head``, the ``letta-migrations`` files from its source
  archive; the wheel has none), as the release's startup script does.
- ``letta server`` under the process guard (``spawn_group``) on a free port, HOME in ``work_dir`` (Letta keeps
  ``~/.letta``: logs, tool sandboxes), ``VLLM_API_BASE`` at the given vLLM (Letta adds /v1; the models become
  ``vllm/<served name>`` with vLLM's max_model_len as context window), a wait on ``/v1/health/``, and a stop of the
  whole process group on the way out.

The database password reaches Letta and alembic in ``LETTA_PG_URI`` (the environment), never on a command line.
Logs: ``work_dir/letta.log`` (the server), ``work_dir/letta-migrations.log``; Postgres logs into its own folder
(deleted with it; its tail is in the error when it fails).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from void_pipeline.lib import environments
from void_pipeline.lib.processes import spawn_group, stop_group
from void_pipeline.testworld.devnet import free_port, log_tail
from void_pipeline.testworld.postgres import PostgresServer, throwaway_postgres

HOST = "127.0.0.1"
DB_NAME = "letta"
DB_USER = "letta"
HEALTH_PATH = "/v1/health/"
PORT_ATTEMPTS = 3  # a free port can be taken between picking it and binding it
# Settings from the caller's environment that would point Letta at other databases or providers, or change its model
# handles (OPENAI_BASE_URL turns them into openai-proxy/...): never passed on.
DROPPED_ENV_PREFIXES = ("LETTA_", "PG", "OPENAI_", "ANTHROPIC_", "GEMINI_", "GROQ_", "TOGETHER_", "MISTRAL_", "VLLM_")


class LettaError(RuntimeError):
    """The Letta server (or its database) could not be set up or started; the message carries the log tail."""


@dataclass(frozen=True)
class LettaServer:
    url: str  # http://127.0.0.1:PORT (the REST API is under /v1)
    port: int
    pid: int  # the process guard's
    log_path: Path
    home: Path
    postgres: PostgresServer = field(repr=False)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: postgres, migrations, server

    @staticmethod
    def model_handle(served_model_name: str) -> str:
        """The handle Letta gives a model vLLM serves under ``served_model_name``."""
        return f"vllm/{served_model_name}"


@dataclass(frozen=True)
class LettaInstall:
    """The ``letta`` environment and the files a start uses from it."""

    env: Path
    migrations: Path  # alembic.ini + alembic/ from the release's source archive

    @property
    def letta(self) -> Path:
        return self.env / "bin" / "letta"

    @property
    def alembic(self) -> Path:
        return self.env / "bin" / "alembic"

    @property
    def site_packages(self) -> Path:
        found = sorted(self.env.glob("lib/python3*/site-packages"))
        if not found:
            raise LettaError(f"no site-packages in {self.env}: rebuild the letta environment")
        return found[-1]

    @property
    def postgres_install(self) -> Path:
        return self.site_packages / "pgserver" / "pginstall"

    @property
    def postgres_libraries(self) -> Path:
        return self.site_packages / "pgserver.libs"  # where pgserver's binaries find libpq (their RPATH)


def letta_install() -> LettaInstall:
    """Build (or reuse) the letta environment and the migrations."""
    env, migrations = environments.ensure_all(["letta", "letta-migrations"])
    return LettaInstall(env, migrations)


def pg_uri(postgres: PostgresServer) -> str:
    """The URI Letta reads from LETTA_PG_URI (it picks the asyncpg / pg8000 drivers itself)."""
    return f"postgresql://{postgres.user}:{postgres.password}@{postgres.host}:{postgres.port}/{postgres.db_name}"


def base_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED_ENV_PREFIXES)}
    env.update(HOME=str(home), PYTHONUNBUFFERED="1", NO_COLOR="1", DO_NOT_TRACK="1")
    env.update(extra or {})
    return env


def create_vector_extension(install: LettaInstall, postgres: PostgresServer) -> None:
    """pgvector in Letta's database (what the release's init.sql does before its migrations)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = postgres.password
    psql = [str(install.postgres_install / "bin" / "psql"), "-h", postgres.host, "-p", str(postgres.port)]
    psql += ["-U", postgres.user, "-d", postgres.db_name, "-v", "ON_ERROR_STOP=1", "-q"]
    done = subprocess.run(
        [*psql, "-c", "CREATE EXTENSION IF NOT EXISTS vector"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise LettaError(f"CREATE EXTENSION vector failed:\n{(done.stdout + done.stderr).strip()[-2000:]}")


def migrate(install: LettaInstall, postgres: PostgresServer, home: Path, log_path: Path) -> None:
    """The release's migrations up to head (``alembic upgrade head`` in the migrations folder)."""
    env = base_env(home, {"LETTA_PG_URI": pg_uri(postgres)})
    with open(log_path, "ab") as log:
        done = subprocess.run(
            [str(install.alembic), "upgrade", "head"],
            cwd=install.migrations,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=600,
            check=False,
        )
    if done.returncode != 0:
        raise LettaError(
            f"Letta's migrations failed ({done.returncode}). Last lines of {log_path}:\n{log_tail(log_path)}"
        )


@contextlib.contextmanager
def start_letta(
    work_dir: Path,
    vllm_url: str | None = None,
    env: Mapping[str, str] | None = None,
    startup_timeout_s: float = 240.0,
    install: LettaInstall | None = None,
) -> Iterator[LettaServer]:
    """Start Postgres, migrate, start Letta pointed at ``vllm_url`` (a vLLM server or a proxy in front of one: the
    base URL, without /v1); yield the running server; stop everything on the way out, whatever happens inside.
    ``env``: more settings for the server (``LETTA_*``)."""
    install = install or letta_install()
    work_dir.mkdir(parents=True, exist_ok=True)
    home = work_dir / "home"
    home.mkdir(exist_ok=True)
    timings: dict[str, float] = {}
    started = time.monotonic()
    with throwaway_postgres(
        DB_NAME, DB_USER, install_dir=install.postgres_install, library_dirs=[install.postgres_libraries]
    ) as postgres:
        timings["postgres"] = time.monotonic() - started
        mark = time.monotonic()
        create_vector_extension(install, postgres)
        migrate(install, postgres, home, work_dir / "letta-migrations.log")
        timings["migrations"] = time.monotonic() - mark
        server_env = base_env(home, {"LETTA_PG_URI": pg_uri(postgres), **(env or {})})
        if vllm_url:
            server_env["VLLM_API_BASE"] = vllm_url.rstrip("/")
        log_path = work_dir / "letta.log"
        for attempt in range(1, PORT_ATTEMPTS + 1):
            mark = time.monotonic()
            port = free_port()
            command = [str(install.letta), "server", "--host", HOST, "--port", str(port)]
            with open(log_path, "ab") as log:
                process = spawn_group(command, stdout=log, stderr=subprocess.STDOUT, env=server_env, cwd=home)
            try:
                url = f"http://{HOST}:{port}"
                if wait_healthy(process, url, log_path, startup_timeout_s):
                    timings["server"] = time.monotonic() - mark
                    yield LettaServer(url, port, process.pid, log_path, home, postgres, timings)
                    return
                if attempt == PORT_ATTEMPTS or "address already in use" not in log_tail(log_path).lower():
                    raise LettaError(
                        f"the Letta server exited with {process.returncode}. Last lines of {log_path}:\n"
                        f"{log_tail(log_path)}"
                    )
            finally:
                stop_group(process)


def wait_healthy(process: subprocess.Popen[bytes], url: str, log_path: Path, timeout_s: float) -> bool:
    """True once ``/v1/health/`` answers 200; False when the server exits first; LettaError on the timeout."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url + HEALTH_PATH).status_code == 200:
                    return True
            time.sleep(0.5)
    raise LettaError(
        f"the Letta server did not answer within {timeout_s:.0f} s. Last lines of {log_path}:\n{log_tail(log_path)}"
    )
