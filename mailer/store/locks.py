"""Who may plan (DESIGN §6) or import: the planning lock, the daemon's leadership
and the import lock.

Three locks, each a PostgreSQL advisory lock (session level, on a connection of
their own) or, on SQLite, a `flock` on a file beside the database:

- planning: held for the length of one planning run (`send`, `run --once`, a
  daemon sweep), so two planners never count the caps at once; others wait.
- leadership: held by one `mailer run` for as long as it lives. A second daemon
  on PostgreSQL waits as a hot standby and takes over when the leader's session
  ends; `run --once` waits up to 30 s for it. On SQLite a second one exits 3.
- import: held by one `mailer import` (or demo-data load) while it writes. A
  second import exits 3 at once: two imports upserting the same ids would
  overwrite each other's rows, the later write silently winning.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from sqlalchemy import Connection, Engine, text

from mailer.core.errors import LockHeld

# Advisory lock keys (signed 64 bits): "mailer planning" and "mailer leader".
PLANNING_KEY = 0x6D61_696C_6572_0001
LEADER_KEY = 0x6D61_696C_6572_0002
IMPORT_KEY = 0x6D61_696C_6572_0003
STAGES_KEY = 0x6D61_696C_6572_0004  # "mailer stages"
PREDICT_KEY = 0x6D61_696C_6572_0005  # "mailer predict"
RECOMMEND_KEY = 0x6D61_696C_6572_0006  # "mailer recommend"


def lock_path(engine: Engine, suffix: str) -> str:
    return f"{engine.url.database or 'mailer.db'}.{suffix}"


@contextmanager
def file_lock(path: str, *, wait: bool, doing: str) -> Iterator[None]:
    """An exclusive flock on PATH holding our pid. Without WAIT, a lock held elsewhere
    raises LockHeld at once: "another mailer process (pid N) is DOING"."""
    with open(path, "a+") as handle:
        if not _flock(handle, wait=wait):
            raise LockHeld(f"another mailer process (pid {_pid_in(handle)}) is {doing}")
        try:
            yield
        finally:
            _unflock(handle)


def _flock(handle: IO[str], *, wait: bool) -> bool:
    """Take the flock of an open lock file and write our pid in it; False when another
    process holds it (and WAIT is off)."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return True


def _unflock(handle: IO[str]) -> None:
    handle.seek(0)
    handle.truncate()
    fcntl.flock(handle, fcntl.LOCK_UN)


def _pid_in(handle: IO[str]) -> str:
    handle.seek(0)
    return handle.read().strip() or "?"


@contextmanager
def one_writer(engine: Engine, conn: Connection, *, key: int, name: str,
               doing: str) -> Iterator[None]:
    """One writer at a time for CONN's transaction (two would both write the same rows):
    a transaction-scoped advisory lock KEY on PostgreSQL, the file lock NAME elsewhere;
    both wait for the other writer to finish."""
    if engine.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        yield
        return
    with file_lock(lock_path(engine, name), wait=True, doing=doing):
        yield


@contextmanager
def planning(engine: Engine) -> Iterator[None]:
    """Hold the planning lock for one planning run, waiting for another to finish."""
    if engine.dialect.name != "postgresql":
        with file_lock(lock_path(engine, "plan-lock"), wait=True, doing="planning"):
            yield
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PLANNING_KEY})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PLANNING_KEY})
            conn.commit()


@contextmanager
def importing(engine: Engine) -> Iterator[None]:
    """Hold the import lock for one import; one held elsewhere raises LockHeld at once."""
    again = "try again when it has finished"
    if engine.dialect.name != "postgresql":
        name = os.path.basename(engine.url.database or "mailer.db")
        with file_lock(lock_path(engine, "import-lock"), wait=False,
                       doing=f"importing into {name}; {again}"):
            yield
        return
    with engine.connect() as conn:
        taken = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                  {"k": IMPORT_KEY}).scalar())
        conn.commit()
        if not taken:
            raise LockHeld(f"another mailer import is writing to this database; {again}")
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": IMPORT_KEY})
            conn.commit()


class Leadership:
    """The daemon's right to plan, taken with `try_take` and kept until `release`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Connection | None = None
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None or self._file is not None

    def try_take(self) -> bool:
        """Take the lock if it is free. On SQLite a lock held elsewhere raises LockHeld."""
        if self.held:
            return True
        if self.engine.dialect.name != "postgresql":
            handle = open(lock_path(self.engine, "run-lock"), "a+")  # noqa: SIM115 - kept open
            if not _flock(handle, wait=False):
                pid = _pid_in(handle)
                handle.close()
                name = os.path.basename(self.engine.url.database or "mailer.db")
                raise LockHeld(f"another mailer run (pid {pid}) is planning from {name}")
            self._file = handle
            return True
        conn = self.engine.connect()
        taken = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                  {"k": LEADER_KEY}).scalar())
        conn.commit()
        if taken:
            self._conn = conn
        else:
            conn.close()
        return taken

    def take(self, timeout: float) -> None:
        """Take the lock within TIMEOUT seconds, else raise LockHeld (`run --once`)."""
        deadline = time.monotonic() + timeout
        while not self.try_take():
            if time.monotonic() >= deadline:
                raise LockHeld(f"another mailer run has led planning on this database for "
                               f"the last {timeout:.0f} s; stop it or let it plan")
            time.sleep(0.5)

    def still_held(self) -> bool:
        """Whether the lock is still ours: a PostgreSQL session that died took it along."""
        if self._conn is None:
            return self._file is not None
        try:
            self._conn.execute(text("SELECT 1"))
            self._conn.commit()
            return True
        except Exception:
            self.release()
            return False

    def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LEADER_KEY})
                conn.commit()
            except Exception:  # a dead session has released it already
                pass
            finally:
                conn.close()
        if self._file is not None:
            handle, self._file = self._file, None
            _unflock(handle)
            handle.close()
