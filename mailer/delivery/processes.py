"""Delivery processes (`delivery.processes`, docs/delivery.md "Several processes"): the
CPU of rendering spread over child processes, one writer and one set of SMTP
connections kept in the sending process.

The sending process (the parent) leases rows, turns them `sending`, sends them, writes
every outcome and holds the rate limit, exactly as with one process. Its children only
render: each gets a slice of a leased batch over a pipe, reads what the mails need from
the database on its own connection (reads, never writes), and sends the rendered
mails back. So a child holds no lease, no lock and no SMTP connection, and can never
send a mail: a child left behind by a parent killed with SIGKILL has nothing it could
do twice. It dies with the parent anyway: PR_SET_PDEATHSIG on Linux, and everywhere an
end-of-file on its pipe, which it is always reading between slices.

Children are forked when the sender opens (before any thread or event loop starts), so
they share the parent's imported code and compiled templates and start in
milliseconds; the SMTP key and the DKIM key never travel. A child ignores SIGTERM and
SIGINT: the parent drains (finishes what is in flight, records it) and then closes the
pipes. A child that dies or breaks has its slice rendered again in the parent, and is
not used again.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import mmap
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection, Pipe, wait
from typing import Any

from mailer.store.db import DatabaseError, create
from mailer.store.ledger import Row

log = logging.getLogger("mailer.send")

MOST_PROCESSES = 4  # `auto`: one per core, at most this many
PR_SET_PDEATHSIG = 1  # linux/prctl.h
POLL = 0.05  # seconds between looks at the stop flag while children render
# The share of each batch the sender renders itself while its children render the rest:
# moved by HERE_STEP after each batch (up when the sender ran out of mails waiting for
# it, down when it did not), between 0 and HERE_MOST.
HERE_STEP = 0.05
HERE_MOST = 0.5


def process_count(setting: int | str) -> int:
    """`delivery.processes`: a number, or `auto` = min(cores this process may use, 4)."""
    if setting != "auto":
        return max(1, int(setting))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MOST_PROCESSES))


@dataclass
class _Child:
    pid: int
    conn: Connection


class RenderPool:
    """Child processes rendering for a sender's Renderer. `render_batch` has the
    Renderer's signature and is called from the sender's render thread, one call at a
    time; `close` ends the children (waiting for them)."""

    def __init__(self, renderer: Any, children: int) -> None:
        from mailer.delivery.worker import Renderer

        self.renderer: Renderer = renderer
        self._stop = mmap.mmap(-1, 1)  # shared with the children: 1 = stop between rows
        self._children: list[_Child] = []
        self._parent_pid = os.getpid()
        self._asked = 0  # batches sent so far
        self.here = 0.0  # the share of a batch rendered in this process (`adjust`)
        self._here_last = False  # the last batch: this process's share was done last
        if threading.current_thread() is not threading.main_thread():
            # PR_SET_PDEATHSIG follows the thread that forked: it must be one that lives
            log.debug("render processes forked from a thread: the pipe alone watches it")
        # No SQLite connection of the sender's crosses the fork (SQLite's per-file lock
        # bookkeeping would be copied into the child): the pool is emptied first and
        # reopens on its next use. A connection checked out (PostgreSQL's sending lock)
        # stays open; the child never touches it.
        renderer.engine.dispose()
        sys.stdout.flush()
        sys.stderr.flush()
        for _ in range(children):
            ours, theirs = Pipe(duplex=True)
            pid = os.fork()
            if pid == 0:  # the child: never returns
                ours.close()
                _child_main(renderer, theirs, self._stop, self._parent_pid,
                            [c.conn for c in self._children])
            theirs.close()
            self._children.append(_Child(pid, ours))

    @property
    def size(self) -> int:
        """Children alive and in use."""
        return len(self._children)

    def adjust(self, starved: bool) -> None:
        """After a batch: whether the sender ran out of mails while it rendered. The
        sender's own share grows when it did and the children were the slower side
        (DKIM signing or a heavy template: the sender's CPU idled), and shrinks when it
        did not (the sender's own work, SMTP and the ledger, limits the rate then) or
        when its own share was done last (it is what the batch waited for)."""
        step = HERE_STEP if starved and not self._here_last else -HERE_STEP
        self.here = min(HERE_MOST, max(0.0, self.here + step))

    def render_batch(self, rows: Sequence[Row], now: datetime, *,
                     stop: Callable[[], bool] | None = None,
                     within: float | None = None) -> Any:
        """ROWS split in one slice a child, in order, each rendered as
        Renderer.render_batch renders (STOP asked between rows, WITHIN seconds); the
        slices' mails and failures in row order, and the rows no child reached."""
        from mailer.delivery.worker import Rendering

        if not self._children or len(rows) < 2:
            return self.renderer.render_batch(rows, now, stop=stop, within=within)
        self._stop[0] = 1 if stop is not None and stop() else 0
        mine = list(rows[len(rows) - int(len(rows) * self.here):])  # the last rows
        theirs = rows[:len(rows) - len(mine)]
        share = -(-len(theirs) // len(self._children))
        slices = [list(theirs[i:i + share]) for i in range(0, len(theirs), share)]
        self._asked += 1  # answers to an earlier batch (never expected) are told apart
        asked: dict[int, tuple[_Child, list[Row]]] = {}  # slice number -> who renders it
        for number, (child, part) in enumerate(zip(self._children, slices, strict=False)):
            try:
                child.conn.send((self._asked, part, now, within))
                asked[number] = (child, part)
            except OSError:
                asked[number] = (self._drop(child), part)
        done: dict[int, Rendering | None] = {}
        failure: Exception | None = None  # raised once every child has answered
        if mine:  # rendered here while the children render theirs; the last part
            try:
                done[len(slices)] = self.renderer.render_batch(mine, now, stop=stop,
                                                               within=within)
            except DatabaseError as err:
                done[len(slices)], failure = None, err
        # every child's answer already there: this process's share is what was waited for
        self._here_last = bool(mine) and all(child.conn.poll() for child, _ in asked.values()
                                             if child.pid)
        while any(number not in done for number in asked):
            if stop is not None and stop():
                self._stop[0] = 1
            waiting = {child.conn: number for number, (child, _) in asked.items()
                       if number not in done and child.pid}
            for conn in wait(list(waiting), timeout=POLL) if waiting else ():
                number = waiting[conn]  # type: ignore[index]
                child, part = asked[number]
                try:
                    batch, kind, payload = child.conn.recv()
                except (EOFError, OSError):
                    asked[number] = (self._drop(child), part)
                    continue
                if batch != self._asked:
                    continue
                done[number] = payload if kind == "done" else None
                if kind == "database":
                    # Rendered here again: a child's read that found no row the sender
                    # sees (seen once, not understood) must not stop the send; a
                    # database really away fails here too, and goes up.
                    log.warning("a render process: %s; its slice is rendered here", payload)
                    try:
                        done[number] = self.renderer.render_batch(part, now, stop=stop,
                                                                  within=within)
                    except DatabaseError as err:
                        failure = DatabaseError(f"a render process: {payload}")
                        failure.__cause__ = err
                elif kind != "done":
                    failure = RuntimeError(f"a render process failed: {payload}")
            for number, (child, part) in asked.items():  # slices of children that died
                if number not in done and not child.pid:
                    done[number] = self.renderer.render_batch(part, now, stop=stop,
                                                              within=within)
        if failure is not None:
            raise failure
        parts = [part for _, part in sorted(done.items()) if part is not None]
        return Rendering([r for part in parts for r in part.ready],
                         [f for part in parts for f in part.failed],
                         [row for part in parts for row in part.left])

    def _drop(self, child: _Child) -> _Child:
        """A child that stopped answering: its slice is rendered here, it is not used
        again (and reaped)."""
        log.warning("render process %d is gone: rendering its mails in the sender",
                    child.pid)
        if child in self._children:
            self._children.remove(child)
        child.conn.close()
        _reap(child.pid, block=False)
        return _Child(0, child.conn)

    def close(self) -> None:
        """End the children: the end of their pipe tells them, and they are waited for."""
        children, self._children = self._children, []
        for child in children:
            child.conn.close()
        for child in children:
            _reap(child.pid, block=True)


def _reap(pid: int, *, block: bool) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0 if block else os.WNOHANG)


def _die_with(parent: int) -> None:
    """SIGKILL when the parent dies (Linux); a parent already gone ends us now."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(0)


def _child_main(renderer: Any, conn: Connection, flag: mmap.mmap, parent: int,
                siblings: list[Connection]) -> None:
    """A render process: slices in, rendered mails out, until the pipe ends. Never
    returns: the parent's frames above us (its locks, its connections) are never
    unwound, closed or collected here."""
    code = 0
    try:
        gc.freeze()  # the parent's objects are never collected (nor their files closed)
        _die_with(parent)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the parent drains, then closes
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for sibling in siblings:  # else a sibling would not see the parent's end
            sibling.close()
        from mailer.delivery.worker import Renderer

        # a connection of our own: the parent's pooled ones are never touched here
        own = Renderer(create(renderer.engine.url), renderer.key, renderer.sign)
        own._versions = dict(renderer._versions)
        while True:
            try:
                batch, rows, now, within = conn.recv()
            except (EOFError, OSError):
                break  # the parent closed the pipe, or died
            try:
                rendering = own.render_batch(rows, now, stop=lambda: flag[0] == 1,
                                             within=within)
                answer: tuple[int, str, Any] = (batch, "done", rendering)
            except DatabaseError as err:
                answer = (batch, "database", " ".join(str(err).split())[:500])
            except Exception as err:  # render_batch fails rows, not batches: a bug
                answer = (batch, "error", f"{type(err).__name__}: {err}")
            try:
                conn.send(answer)
            except OSError:
                break
    except BaseException:  # nothing may unwind into the parent's frames
        code = 1
    finally:
        os._exit(code)
