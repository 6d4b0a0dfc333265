"""A real, throwaway PostgreSQL server for tests and benchmarks, from Debian's `postgresql` package.

`PgServer` runs initdb into a fresh temp folder, starts the server on 127.0.0.1 at a free port (its unix socket in
the same folder, never /var/run/postgresql), creates databases on demand and removes everything at stop. PostgreSQL
refuses to run as root: under root (CI) the server runs as the `postgres` user the package creates, in a folder
owned by that user; as a normal user it runs as that user.

Fixtures (import them into a test module: `from tests.pg_server import pg_server, pg_url`):
- `pg_server`: session scope, one server for the whole run; skips with the reason when the binaries are missing
  (fails instead when WORKBENCH_REQUIRE_POSTGRES=1, as .ci/run sets once it has installed them).
- `pg_url`: a new empty database on that server for one test, as a SQLAlchemy URL (postgresql+psycopg://...).
"""
from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
SUPERUSER = "workbench"
REQUIRE_ENV = "WORKBENCH_REQUIRE_POSTGRES"


class PgUnavailable(RuntimeError):
    """PostgreSQL's server binaries (or, under root, the `postgres` user) are not on this machine."""


def find_bin_dir() -> Path:
    """The newest installed server's bin folder (Debian: /usr/lib/postgresql/<major>/bin), or PG_BIN if set."""
    candidates = [os.environ["PG_BIN"]] if os.environ.get("PG_BIN") else []
    def major(folder: str) -> int:
        name = Path(folder).parent.name
        return int(name) if name.isdigit() else 0

    candidates += sorted(glob.glob(PG_BIN_GLOB), key=major, reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for folder in candidates:
        if all((Path(folder) / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    raise PgUnavailable(
        "PostgreSQL server binaries not found (initdb, pg_ctl, postgres under /usr/lib/postgresql/*/bin); "
        "install Debian's `postgresql` package (.ci/run does) or set PG_BIN"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _reachable_by_all(folder: Path) -> bool:
    """Whether another user can walk into `folder` (every parent searchable by others)."""
    for part in [folder, *folder.parents]:
        if not os.stat(part).st_mode & 0o001:
            return False
    return True


class PgServer:
    """A PostgreSQL server in a temp folder; `start()`, `create_database()`, `url()`, `stop()`.

    durable=False turns off fsync and synchronous commit (a test server loses nothing that matters on a crash);
    durable=True keeps the server defaults, as a production server would run.
    """

    _names = itertools.count()

    def __init__(self, durable: bool = False) -> None:
        self.durable = durable
        self.bin_dir = find_bin_dir()
        self.run_as: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self.run_as = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise PgUnavailable("running as root and there is no `postgres` user to run the server as") from exc
        self.root: Path | None = None
        self.port: int | None = None

    # -- processes ------------------------------------------------------------------------------------------------
    def _run(self, tool: str, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        kwargs = {}
        if self.run_as is not None:
            kwargs = {"user": self.run_as.pw_uid, "group": self.run_as.pw_gid, "extra_groups": []}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", HOME=str(self.root), PGTZ="UTC")
        result = subprocess.run(
            [str(self.bin_dir / tool), *args], cwd=self.root, env=env, capture_output=True, text=True,
            timeout=timeout, **kwargs,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def _make_root(self) -> Path:
        base = Path(tempfile.gettempdir())
        if self.run_as is not None and not _reachable_by_all(base):
            base = Path("/tmp")  # the postgres user must reach its data folder
        root = Path(tempfile.mkdtemp(prefix="workbench-pg-", dir=base))
        if self.run_as is not None:
            os.chown(root, self.run_as.pw_uid, self.run_as.pw_gid)
        return root

    def start(self) -> PgServer:
        self.root = self._make_root()
        data = self.root / "data"
        self._run("initdb", "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
        settings = ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
                    "-c", "max_connections=100", "-c", "shared_buffers=64MB", "-c", "logging_collector=off"]
        if not self.durable:
            settings += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        last_error = None
        for _attempt in range(5):  # a free port can be taken between finding it and binding it
            self.port = _free_port()
            options = " ".join([*settings, "-c", f"port={self.port}"])
            result = self._run("pg_ctl", "-D", str(data), "-l", str(self.root / "server.log"), "-o", options,
                               "-w", "-t", "60", "start", check=False, timeout=90)
            if result.returncode == 0:
                atexit.register(self.stop)
                return self
            last_error = f"{result.stdout}\n{result.stderr}\n{self.log_tail()}"
        self.stop()
        raise RuntimeError(f"PostgreSQL did not start:\n{last_error}")

    def log_tail(self, lines: int = 30) -> str:
        log = self.root / "server.log" if self.root else None
        if log is None or not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.root is None:
            return
        data = self.root / "data"
        if (data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop", check=False, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    # -- databases ------------------------------------------------------------------------------------------------
    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a fresh name unless given) and return its SQLAlchemy URL."""
        import psycopg

        name = name or f"wb_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"


def start_or_skip(durable: bool = False) -> PgServer:
    """A started server, or pytest.skip with the reason (pytest.fail when WORKBENCH_REQUIRE_POSTGRES=1)."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        _unavailable(f"the PostgreSQL driver is not installed ({exc}); pip install 'psycopg[binary]'")
    try:
        server = PgServer(durable=durable)
    except PgUnavailable as exc:
        _unavailable(str(exc))
    return server.start()


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


_SESSION_SERVER: PgServer | None = None


@pytest.fixture(scope="session")
def pg_server():
    """One throwaway PostgreSQL server for the test session (shared by every module that imports this fixture)."""
    global _SESSION_SERVER
    if _SESSION_SERVER is None or _SESSION_SERVER.root is None:
        _SESSION_SERVER = start_or_skip()
    yield _SESSION_SERVER
    _SESSION_SERVER.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A fresh, empty database on the session's server, as a SQLAlchemy URL."""
    return pg_server.create_database()
