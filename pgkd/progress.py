"""Progress bars for long work outside Lightning's fits (teacher steps, zero-shot, predict).

tqdm bars on standard error, shown when it is a terminal (``PGKD_PROGRESS=1`` / ``0`` forces
them on / off). A teacher call can take minutes, so the bar is redrawn every second while it
waits: elapsed time keeps moving and the ETA follows the calls already made.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

from tqdm.auto import tqdm


def progress_enabled() -> bool:
    forced = os.environ.get("PGKD_PROGRESS")
    if forced is not None:
        return forced.strip().lower() not in ("0", "false", "no", "")
    return sys.stderr.isatty()


@contextmanager
def progress(total: int, desc: str, unit: str, enabled: bool | None = None) -> Iterator[tqdm]:
    """A tqdm bar that refreshes itself every second until the block ends."""
    bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
               disable=not (progress_enabled() if enabled is None else enabled))
    done = threading.Event()

    def tick() -> None:
        while not done.wait(1.0):
            bar.refresh()

    ticker = threading.Thread(target=tick, daemon=True)
    if not bar.disable:
        ticker.start()
    try:
        yield bar
    finally:
        done.set()
        if ticker.is_alive():
            ticker.join()
        bar.close()
