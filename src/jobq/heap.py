"""A worker process keeps freed heap memory instead of handing it back to the OS at every free.

Once a SQLite database is larger than SQLite's page cache (2 MB by default), SQLite allocates
a block of about 87 KB (the size of 20 page-cache pages) as each statement of a write
transaction begins and frees it as the statement ends (seen with gdb on ``brk``). glibc's
``malloc`` gives memory at the top of its heap back to the OS as soon as more than 128 KB is
free there, so on a busy worker every statement cost an ``sbrk`` down, an ``sbrk`` up and the
page faults of touching the memory again: a SQLite worker drained a queue of 20,000 or
1,000,000 jobs about a third slower than one of 10,000. Keeping 16 MiB of padding at the top
of the heap (``M_TOP_PAD``) ends the churn; the process holds at most that much more memory it
does not use.

Only the processes jobq owns do this (``jobq worker`` and :meth:`jobq.App.run_worker`), only
with glibc, and never when the environment already tunes ``malloc`` (``MALLOC_TOP_PAD_``,
``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Callable, Mapping

log = logging.getLogger("jobq.worker")

#: glibc's ``mallopt`` parameter for the padding kept at the top of the heap (malloc.h)
M_TOP_PAD = -2
TOP_PAD_BYTES = 16 * 1024 * 1024
#: environment variables through which someone already tunes glibc's malloc
MALLOC_ENV = ("MALLOC_TOP_PAD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def _glibc_mallopt() -> Callable[[int, int], int] | None:
    try:
        libc = ctypes.CDLL(None)
        # glibc only (musl's mallopt does nothing): gnu_get_libc_version is glibc's
        if not hasattr(libc, "gnu_get_libc_version"):
            return None
        mallopt: Callable[[int, int], int] = libc.mallopt
    except (OSError, AttributeError):
        return None
    return mallopt


def keep_freed_heap(
    top_pad: int = TOP_PAD_BYTES,
    *,
    environ: Mapping[str, str] = os.environ,
    platform: str = sys.platform,
    mallopt: Callable[[], Callable[[int, int], int] | None] = _glibc_mallopt,
) -> bool:
    """Set glibc's ``M_TOP_PAD`` to ``top_pad`` bytes for this process; True if it did."""
    if not platform.startswith("linux") or any(name in environ for name in MALLOC_ENV):
        return False
    setter = mallopt()
    if setter is None:
        return False
    if setter(M_TOP_PAD, top_pad) != 1:
        log.debug("mallopt(M_TOP_PAD, %d) refused", top_pad)
        return False
    return True
