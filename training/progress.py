"""Progress bars with an ETA on stderr, for the long steps of training and evaluation.

Bars are drawn only where a person watches: stderr is a terminal and the verb was not given
`--quiet`. Anywhere else (a log file, CI, a test) they are silent and cost nothing, so library code
can wrap every long loop in `progress(...)` without asking who called it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

T = TypeVar("T")

_quiet = False


def set_quiet(quiet: bool) -> None:
    """Silence (or allow) every bar of this process; the CLI verbs set it from `--quiet`."""
    global _quiet
    _quiet = bool(quiet)


def stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def bars_enabled() -> bool:
    """Whether bars are drawn now: not silenced, and stderr is a terminal."""
    return not _quiet and stderr_is_terminal()


def progress_bar(
    total: int | None, desc: str, *, unit: str = "it", initial: int = 0, enabled: bool = True
) -> tqdm:
    """A bar of `total` steps (elapsed, ETA and rate on the right); a no-op when bars are off."""
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        dynamic_ncols=True,
        disable=not (enabled and bars_enabled()),
    )


def progress(items: Iterable[T], desc: str, *, unit: str = "img", total: int | None = None) -> Iterator[T]:
    """`items`, with a bar while they are consumed."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(total, desc, unit=unit) as bar:
        for item in items:
            yield item
            bar.update(1)


@contextlib.contextmanager
def log_above_bars() -> Iterator[None]:
    """Route `logging` output through tqdm while bars may be drawn, so a log line never tears a bar."""
    if not bars_enabled():
        yield
        return
    with logging_redirect_tqdm():
        yield
