"""How many constants an import may build, counted before each one is materialized.

A few kilobytes of ONNX can ask for gigabytes of weights (ConstantOfShape, Expand,
broadcasting arithmetic on folded constants: the ONNX package's 9 KB `light_vgg19` holds
143 M weights). Every initializer and every folded result is counted from its shape before
its data exist, and the import stops with one line when the total exceeds `--max-params`
(opt-in) or when building the bundle could not fit in the memory available now.
"""

from __future__ import annotations

import os
import sys

from faustgen.errors import FaustgenError

# Peak bytes of a build per byte of constants: the imported values, their packed copies for
# the kernels, and one transient array (measured: VGG-19, 572 MB of weights, peaks at ~2.2x).
BUILD_COPIES = 3


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now (MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


class ConstBudget:
    """Running count of the constants an import has built (elements and bytes)."""

    def __init__(self, source: str, max_params: int | None, available: int | None = None):
        self.source = source
        self.max_params = max_params
        self.available = available_memory() if available is None else available
        self.params = 0
        self.bytes = 0

    def reserve(self, elements: int, nbytes: int, what: str) -> None:
        """Count a constant about to be built; raise when the build could no longer fit."""
        self.params += elements
        self.bytes += nbytes
        if self.max_params is not None and self.params > self.max_params:
            raise FaustgenError(
                f"{self.source}: {what} brings the model's constants to {self.params} weights, "
                f"above the --max-params limit of {self.max_params}"
            )
        need = self.bytes * BUILD_COPIES
        if self.available is not None and need > self.available:
            raise FaustgenError(
                f"{self.source}: {what} brings the model's constants to {self.params} values "
                f"({_gb(self.bytes)}); building it needs about {_gb(need)} of memory and "
                f"{_gb(self.available)} is available"
            )

    def room(self) -> int:
        """Values that may still be built: under --max-params and, at 4 bytes each, in memory."""
        room = sys.maxsize if self.max_params is None else self.max_params - self.params
        if self.available is not None:
            room = min(room, (self.available // BUILD_COPIES - self.bytes) // 4)
        return max(room, 0)
