"""A throwaway PostgreSQL server for tests: the Debian package's binaries, a fresh cluster in a temp folder, TCP on
127.0.0.1 with password authentication, stopped and deleted afterwards.

    with throwaway_postgres() as server:
        psycopg2.connect(**server.connect_kwargs())
        subprocess.run([...], env={**os.environ, **server.dagster_env()})  # what docker/dagster.yaml reads

PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` system user (the package creates it),
otherwise as whoever runs this. The password is random, handed to initdb in a file, and never printed.

``install_dir`` runs another PostgreSQL installation (``bin/``, ``lib/``, ``share/``: pgserver's, which has pgvector)
instead of the Debian package's; as root it is copied into the cluster's folder first, since the ``postgres`` user
cannot reach it inside root's home (``library_dirs``: where its binaries find their shared libraries, copied too).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from void_pipeline.lib.processes import pid_alive
from void_pipeline.testworld.devnet import free_port, log_tail

DEBIAN_ROOT = Path("/usr/lib/postgresql")  # /usr/lib/postgresql/<major>/bin: not on PATH on Debian
INSTALL_HINT = "apt-get install postgresql"
SERVER_USER = "postgres"
REQUIRED = ("initdb", "pg_ctl", "createdb")
PORT_ATTEMPTS = 3  # a free port can be taken between picking it and binding it
# Throwaway data: durability is not needed, speed is.
SERVER_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


class PostgresError(RuntimeError):
    """The server could not be set up, started or stopped; the message carries the tool's output."""


class PostgresNotInstalled(PostgresError):
    """No PostgreSQL server binaries were found."""


@dataclass(frozen=True)
class PostgresServer:
    """A running server and the database made for the caller (its user is the cluster's superuser)."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    db_name: str
    pid: int  # the postmaster
    data_dir: Path
    log_file: Path

    def connect_kwargs(self) -> dict[str, str | int]:
        """Keyword arguments for psycopg2.connect."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "dbname": self.db_name,
        }

    def dagster_env(self) -> dict[str, str]:
        """The variables docker/dagster.yaml reads its storage settings from."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.db_name,
        }


def version_key(folder: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", folder.name)) or (-1,)


def postgres_bin_dir(roots: Sequence[Path] = (DEBIAN_ROOT,), path: str | None = None) -> Path:
    """The folder with initdb, pg_ctl and createdb: the newest ``<root>/<version>/bin``, else the one on ``path``
    (default $PATH)."""
    installed = [
        version / "bin"
        for root in roots
        if root.is_dir()
        for version in root.iterdir()
        if all((version / "bin" / tool).is_file() for tool in REQUIRED)
    ]
    if installed:
        return max(installed, key=lambda bin_dir: version_key(bin_dir.parent))
    found = shutil.which("initdb", path=path)
    if found and all((Path(found).parent / tool).is_file() for tool in REQUIRED):
        return Path(found).parent
    searched = ", ".join([*(f"{root}/*/bin" for root in roots), "$PATH"])
    raise PostgresNotInstalled(
        f"no PostgreSQL server found (looked for {', '.join(REQUIRED)} in {searched}): {INSTALL_HINT}"
    )


def server_account() -> tuple[int, int] | None:
    """(uid, gid) to run the server as when this process is root; None to run it as ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PostgresError(
            f"PostgreSQL will not run as root and there is no '{SERVER_USER}' user to run it as ({INSTALL_HINT} "
            "creates it)"
        ) from None
    return entry.pw_uid, entry.pw_gid


def accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def child_pids(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (the postmaster's backends and workers)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat.parent.name))
    return children


class _Cluster:
    """One cluster's folder and the tools run on it, as the server's account."""

    def __init__(self, bin_dir: Path, work: Path, account: tuple[int, int] | None) -> None:
        self.bin_dir = bin_dir
        self.work = work
        self.account = account
        self.data_dir = work / "data"
        self.socket_dir = work / "sockets"
        self.log_file = work / "postgres.log"
        # PG* variables of the caller (PGPORT, PGDATA, ...) would point the tools elsewhere
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        self.env.update(LC_ALL="C", HOME=str(work))

    def own(self, path: Path) -> None:
        if self.account is not None:
            os.chown(path, *self.account)

    def run(self, tool: str, *args: str, as_server: bool = True, env: dict[str, str] | None = None) -> None:
        account = self.account if as_server else None
        done = subprocess.run(
            [str(self.bin_dir / tool), *args],
            cwd=self.work,
            env=env or self.env,
            user=account[0] if account else None,
            group=account[1] if account else None,
            extra_groups=[] if account else None,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip()[-3000:]
            raise PostgresError(f"{tool} {args[0] if args else ''} failed ({done.returncode}):\n{output}")

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        return None


@contextlib.contextmanager
def throwaway_postgres(
    db_name: str = "dagster",
    user: str = "dagster",
    start_timeout_s: float = 60.0,
    install_dir: Path | None = None,
    library_dirs: Sequence[Path] = (),
) -> Iterator[PostgresServer]:
    """Start a fresh server on 127.0.0.1 with ``db_name`` owned by the superuser ``user``; stop it and delete its
    folder afterwards. ``install_dir``: the PostgreSQL installation to run (default: the Debian package's)."""
    bin_dir = postgres_bin_dir() if install_dir is None else install_dir / "bin"
    account = server_account()
    password = secrets.token_urlsafe(24)
    work = Path(tempfile.mkdtemp(prefix="void-postgres-"))
    copied = install_dir is not None and account is not None
    if copied and install_dir is not None:
        bin_dir = copy_installation(install_dir, library_dirs, work / "install")
    cluster = _Cluster(bin_dir, work, account)
    if copied:
        cluster.env["LD_LIBRARY_PATH"] = str(bin_dir.parent / "lib")
    postmaster: int | None = None
    try:
        cluster.own(work)
        cluster.socket_dir.mkdir()
        cluster.own(cluster.socket_dir)
        password_file = work / "password"
        password_file.write_text(password)
        password_file.chmod(0o600)
        cluster.own(password_file)
        cluster.run(
            "initdb",
            *("-D", str(cluster.data_dir), "-U", user, "--pwfile", str(password_file)),
            *("--auth-host=scram-sha-256", "--auth-local=scram-sha-256"),
            *("--locale=C", "--encoding=UTF8", "--no-sync", "--no-instructions"),
        )
        password_file.unlink()
        port = start(cluster, start_timeout_s)
        postmaster = cluster.postmaster_pid()
        if postmaster is None:
            raise PostgresError(f"postgres started but wrote no postmaster.pid:\n{log_tail(cluster.log_file)}")
        host = "127.0.0.1"
        deadline = time.monotonic() + start_timeout_s
        while not accepts_connections(host, port):
            if time.monotonic() > deadline or not pid_alive(postmaster):
                raise PostgresError(
                    f"postgres does not accept connections on port {port}:\n{log_tail(cluster.log_file)}"
                )
            time.sleep(0.05)
        # a client over TCP with the password: proves the authentication the caller will use
        client_env = {**cluster.env, "PGPASSWORD": password}
        cluster.run("createdb", "-h", host, "-p", str(port), "-U", user, db_name, as_server=False, env=client_env)
        yield PostgresServer(host, port, user, password, db_name, postmaster, cluster.data_dir, cluster.log_file)
    finally:
        try:
            stop(cluster, postmaster)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def copy_installation(install_dir: Path, library_dirs: Sequence[Path], target: Path) -> Path:
    """What the server needs of an installation (bin, lib, share) copied to ``target``, the files of
    ``library_dirs`` into its lib/ (found there through LD_LIBRARY_PATH); returns the copy's bin/."""
    for part in ("bin", "lib", "share"):
        if not (install_dir / part).is_dir():
            raise PostgresNotInstalled(f"{install_dir} is no PostgreSQL installation (it has no {part}/)")
        shutil.copytree(install_dir / part, target / part, symlinks=True)
    for folder in library_dirs:
        for library in folder.iterdir():
            shutil.copy2(library, target / "lib" / library.name)
    target.chmod(0o755)
    return target / "bin"


def start(cluster: _Cluster, timeout_s: float) -> int:
    """pg_ctl start -w on a free port (another if that one was taken meanwhile); returns the port."""
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = free_port()
        options = ["-c", "listen_addresses=127.0.0.1", "-p", str(port), "-k", str(cluster.socket_dir)]
        for setting in SERVER_SETTINGS:
            options += ["-c", setting]
        try:
            cluster.run(
                "pg_ctl",
                *("start", "-w", "-t", str(int(timeout_s)), "-D", str(cluster.data_dir), "-l", str(cluster.log_file)),
                *("-o", shlex.join(options)),  # pg_ctl hands -o to a shell
            )
            return port
        except PostgresError as error:
            log = log_tail(cluster.log_file)
            if attempt < PORT_ATTEMPTS and "could not bind" in log:
                continue
            raise PostgresError(f"{error}\nserver log:\n{log}") from None
    raise AssertionError("unreachable")


def stop(cluster: _Cluster, postmaster: int | None) -> None:
    """pg_ctl stop -m fast; whatever is still running after it (or if it fails) is killed."""
    postmaster = postmaster or cluster.postmaster_pid()
    if postmaster is None or not pid_alive(postmaster):
        return
    server_pids = [postmaster, *child_pids(postmaster)]  # before the stop: orphans get another parent
    with contextlib.suppress(PostgresError, subprocess.TimeoutExpired):
        cluster.run("pg_ctl", "stop", "-w", "-t", "30", "-m", "fast", "-D", str(cluster.data_dir))
    left = [pid for pid in server_pids if pid_alive(pid)]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(pid_alive(pid) for pid in left) and time.monotonic() < deadline:
        time.sleep(0.05)
