"""The analyzer's local process pool, which never outlives the process that started it.

Workers watch their parent: each runs a daemon thread that checks `os.getppid()` every
`POLL_S` seconds and exits the worker as soon as the parent is gone, however it died (SIGKILL
included). We poll rather than use Linux's `prctl(PR_SET_PDEATHSIG)` because polling works on
every POSIX system (macOS too) and with every start method, needs no ctypes, and does not
depend on which *thread* started the worker (PDEATHSIG fires when that thread exits, and the
executor may start workers from its own threads). The cost is one wake-up per worker every
`POLL_S` seconds and at most that long before an orphan exits.

In the parent, SIGTERM is turned into the same path as Ctrl-C while the pool runs: the pool
cancels what has not started, terminates its workers at once, and the signal is then delivered
again with its previous disposition (by default the process ends with status 143).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from multiprocessing import get_context
from typing import Any

__all__ = ["POLL_S", "run_pool"]

POLL_S = 0.2


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    os._exit(1)  # the parent is gone: nobody will read our results


def _init_worker(
    main_pid: int, direct: bool, initializer: Callable[..., None], initargs: Sequence[Any]
) -> None:
    parent = os.getppid()
    if direct and parent != main_pid:  # the main process died before this worker started
        os._exit(1)
    # a forked worker inherits the parent's SIGTERM handler, which the executor's task loop
    # would catch like any exception: `terminate()` must end the worker, so restore the default
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # under forkserver the parent is the fork server, which exits when the main process does
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    initializer(*initargs)


class _Terminated(KeyboardInterrupt):
    """SIGTERM arrived while the pool ran: handled like Ctrl-C."""


@contextmanager
def _sigterm_like_ctrl_c() -> Iterator[None]:
    """While inside, SIGTERM raises `_Terminated` in the main thread; on the way out it is
    re-delivered to whatever handled SIGTERM before."""
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or previous in (
        None,
        signal.SIG_IGN,
    ):
        yield  # signals can only be handled in the main thread; an ignored SIGTERM stays so
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        raise _Terminated(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, previous)
        signal.raise_signal(signal.SIGTERM)  # the default action ends the process here
        raise  # a handler of the caller's that returned: stop like Ctrl-C
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel the parts not started and terminate the workers now, not after their part."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=10)


def run_pool(
    num_workers: int,
    mp_context: str,
    initializer: Callable[..., None],
    initargs: Sequence[Any],
    fn: Callable[..., Any],
    tasks: Sequence[Sequence[Any]],
    on_result: Callable[[Any], Any],
) -> None:
    """Run `fn(*task)` for every task on `num_workers` processes (each set up once by
    `initializer(*initargs)`), passing each result to `on_result` as it comes. An error in a
    worker, Ctrl-C or SIGTERM stops the whole pool at once and is raised here."""
    direct = mp_context != "forkserver"
    with _sigterm_like_ctrl_c():
        pool = ProcessPoolExecutor(
            num_workers,
            get_context(mp_context),
            _init_worker,
            (os.getpid(), direct, initializer, tuple(initargs)),
        )
        try:
            futures: list[Future[Any]] = [pool.submit(fn, *task) for task in tasks]
            for future in as_completed(futures):
                on_result(future.result())
        except BaseException:
            _stop(pool)
            raise
        pool.shutdown()
