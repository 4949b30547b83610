"""Give freed heap back to the operating system now and then.

A burst (a thousand ModelDeployments applied at once) makes the process allocate far more than it keeps; glibc's
malloc holds on to the freed pages, so the resident size stays at the burst's peak long after. ``malloc_trim``
returns them. Elsewhere (musl, macOS) there is nothing to call and this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading

__all__ = ["start_trimming", "trim"]

_log = logging.getLogger("devmlops.memory")


def _libc_trim() -> ctypes._NamedFuncPointer | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        function = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = [ctypes.c_size_t], ctypes.c_int
    return function


_TRIM = _libc_trim()


def trim() -> bool:
    """Release free heap pages; True when the C library did (glibc only)."""
    return bool(_TRIM is not None and _TRIM(0))


def start_trimming(interval: float = 15.0) -> threading.Event:
    """Trim every ``interval`` seconds in a daemon thread; set the returned event to stop."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval):
            trim()

    if _TRIM is None:
        _log.debug("no malloc_trim in this C library; freed memory stays with the allocator")
    else:
        threading.Thread(target=run, name="malloc-trim", daemon=True).start()
    return stop
