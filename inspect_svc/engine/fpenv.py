"""Keep the calling thread's floating-point environment across an ONNX Runtime run.

The sessions flush denormal floats to zero (`session.set_denormal_as_zero`, see `session.py`), which
ONNX Runtime does by setting the processor's flush-to-zero flags on the thread that calls `run`, and
leaves them set. The service's engine thread does not mind; any other caller would: training's
evaluation, a benchmark or a test that runs a bundle in-process would afterwards silently lose every
subnormal float on that thread (a property-based test generator refuses to run at all). So each run
restores the environment it found. Where the C library's `fegetenv`/`fesetenv` cannot be loaded the
run leaves the environment as ONNX Runtime sets it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# Room for the C library's `fenv_t` on every platform it is loaded on (32 bytes on x86-64 glibc).
_FENV_BYTES = 256


def _load_libm() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("m")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


_LIBM = _load_libm()


@contextmanager
def kept_floating_point_environment() -> Iterator[None]:
    """Run the block, then put back the floating-point environment (rounding, flush-to-zero) it found."""
    if _LIBM is None:
        yield
        return
    saved = ctypes.create_string_buffer(_FENV_BYTES)
    _LIBM.fegetenv(saved)
    try:
        yield
    finally:
        _LIBM.fesetenv(saved)
