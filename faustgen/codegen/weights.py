"""Where a bundle's constant arrays live: C literals, an `.incbin` blob, or a file read at start.

* ``c``: ``static const`` arrays with float literals in ``PREFIX_weights.c`` (readable,
  commented; what small models get).
* ``blob``: the arrays' bytes in ``PREFIX_weights.bin``, linked into ``.rodata`` by a tiny
  GNU assembler file (``PREFIX_weights.s``, one ``.incbin`` per array) and declared
  ``extern const`` in C. The C compiler never sees the numbers, so its memory and time no
  longer grow with the model (gcc needs ~270 bytes and ~5 µs per literal).
* ``file``: the same ``PREFIX_weights.bin`` stays on disk; ``PREFIX_load(path)`` reads it into
  static (``.bss``) arrays at start-up.

``auto`` keeps literals up to ``LITERAL_LIMIT_BYTES`` of constants and uses the blob above.

The blob is a 64-byte header then every array at a 64-byte aligned offset (zero padding):
the header is ``FGWEIGHT``, 16 hex digits of a fingerprint of the contents and 16 hex digits
of the file size, so ``PREFIX_load`` refuses the weights of another build. Data are written in
the build machine's byte order (little-endian everywhere faustgen targets), straight from the
numpy buffers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from faustgen.codegen.emit import ConstArray

MODES = ("auto", "c", "blob", "file")
# 2 MiB of constants (512 Ki floats): cc1 then needs ~150 MB and ~3 s (plus ~3 s to render
# the literals), which a Raspberry Pi Zero (512 MB) still compiles with the bundle's Makefile;
# the demo's dense MLP (1.07 MB) stays readable C. Beyond it the cost of literals only grows.
LITERAL_LIMIT_BYTES = 2 * 1024 * 1024
ALIGN = 64  # bytes: a cache line, and enough for AVX-512 / NEON loads
HEADER_BYTES = 64
MAGIC = b"FGWEIGHT"


def choose_mode(requested: str, arrays: list[ConstArray]) -> str:
    """The storage for these arrays: `requested`, or for ``auto`` literals up to the limit."""
    if requested not in MODES:
        raise ValueError(f"weights mode {requested!r} is not one of {', '.join(MODES)}")
    if requested != "auto":
        return requested
    total = sum(a.values.nbytes for a in arrays if a.fill is None)
    return "c" if total <= LITERAL_LIMIT_BYTES else "blob"


@dataclass(frozen=True)
class BlobEntry:
    array: ConstArray
    offset: int  # bytes from the start of the file
    nbytes: int  # at least one element: an empty array still needs a symbol


@dataclass
class WeightsBlob:
    """The layout of PREFIX_weights.bin; `write` streams it from the arrays' own buffers."""

    entries: list[BlobEntry]
    size: int  # bytes of the whole file
    fingerprint: str  # 16 hex digits

    @property
    def header(self) -> bytes:
        """The 40 significant header bytes (the rest of the 64 are zero)."""
        return MAGIC + self.fingerprint.encode() + f"{self.size:016x}".encode()

    def write(self, path: Path) -> None:
        with open(path, "wb") as f:
            f.write(self.header.ljust(HEADER_BYTES, b"\0"))
            pos = HEADER_BYTES
            for e in self.entries:
                f.write(b"\0" * (e.offset - pos))
                data = e.array.values
                f.write(memoryview(data).cast("B") if data.size else b"")
                f.write(b"\0" * (e.nbytes - data.nbytes))
                pos = e.offset + e.nbytes
            f.write(b"\0" * (self.size - pos))


def layout(arrays: list[ConstArray]) -> WeightsBlob:
    """Offsets of the arrays in the blob, in program order, each aligned to ALIGN bytes."""
    entries, pos = [], HEADER_BYTES
    fp = hashlib.sha256()
    for a in arrays:
        if a.fill is not None:
            continue  # filled at run time
        nbytes = max(a.values.nbytes, a.values.itemsize)
        entries.append(BlobEntry(a, pos, nbytes))
        fp.update(f"{a.ident}:{a.ctype}:{pos}:{nbytes}:{a.digest}\n".encode())
        pos = _align(pos + nbytes)
    return WeightsBlob(entries, pos, fp.hexdigest()[:16])


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN
