"""Instructions per convolution layer on an emulated target (rpi64, rpi), counted under qemu-user.

Debian's qemu-user 7.2 ships no TCG plugins (no libinsn.so), so the count is taken from
qemu's own log instead: `-d in_asm,exec,nochain` prints every translated block once (its
guest instructions) and a line each time a block runs; a small C counter reads that log
through a FIFO and adds up the instructions of the blocks executed between two marker
functions the harness calls right before and after the kernel (fg_conv /
fg_conv_depthwise, ReLU fused, the layer's shape; random data). The count is exact for
the code qemu runs (the -O3 build for the target's CPU), one call, nothing else: it is
not a time, and a Cortex-A72 retires these instructions at its own, unmeasured rate.

    .venv/bin/python benchmarks/bench_qemu_count.py [--models resnet18] [--target rpi64]
        [--cflags -DFG_CONV_PGEMM=0]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_conv_layers import (
    LAYER_C,
    MODELS,
    RUNTIME,
    cnn_onnx,
    conv_layers,
    describe,
    flops,
    key,
)

from faustgen.backend.toolchain import load_target

HARNESS = (
    LAYER_C
    + r"""
/* the counter sums the blocks run between these two (kept out of line) */
__attribute__((noinline)) void fg_count_begin(void) { __asm__ volatile(""); }
__attribute__((noinline)) void fg_count_end(void) { __asm__ volatile(""); }
int main(void)
{
    fg_layer L = {0};
    if (!layer_read(&L))
        return 2;
    fg_count_begin();
    layer_run(&L);
    fg_count_end();
    printf("%s\n", fg_conv_algorithm(&L.s, L.dw));
    layer_free(&L);
    return 0;
}
"""
)

# Reads qemu's "-d in_asm,exec,nochain" log on stdin; prints the guest instructions of
# the blocks executed from fg_count_begin to fg_count_end, and the number of executed
# blocks whose translation was not in the log (should be 0).
COUNTER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define CAP (1u << 22)
static unsigned long long keys[CAP];
static unsigned counts[CAP];
static unsigned slot(unsigned long long pc)
{
    unsigned h = (unsigned)((pc * 0x9E3779B97F4A7C15ull) >> 42) & (CAP - 1);
    while (keys[h] && keys[h] != pc)
        h = (h + 1) & (CAP - 1);
    return h;
}
int main(void)
{
    static char line[8192];
    unsigned long long total = 0, pc = 0, missing = 0;
    unsigned n = 0;
    int in_block = 0, on = 0;
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "Trace ", 6)) {
            const char *p = strchr(line, '/'), *sym = strstr(line, "] ");
            unsigned h;
            if (sym && !strncmp(sym + 2, "fg_count_begin", 14))
                on = 1;
            else if (sym && !strncmp(sym + 2, "fg_count_end", 12))
                on = 0;
            else if (on && p) {
                h = slot(strtoull(p + 1, NULL, 16));
                if (keys[h])
                    total += counts[h];
                else
                    ++missing;
            }
        } else if (!strncmp(line, "IN:", 3)) {
            in_block = 1;
            n = 0;
        } else if (in_block && line[0] == '0' && line[1] == 'x') {
            if (!n)
                pc = strtoull(line, NULL, 16);
            ++n;
        } else if (in_block && (line[0] == '\n' || line[0] == '\0')) {
            if (n) {
                const unsigned h = slot(pc);
                keys[h] = pc;
                counts[h] = n;
            }
            in_block = 0;
        }
    }
    printf("%llu %llu\n", total, missing);
    return 0;
}
"""


def build(target: str, tmp: Path, extra: list[str]) -> tuple[list[str], Path]:
    """The harness for the target (its flags, then `extra`; its emulator command) and the
    host-side counter."""
    t = load_target(target)
    if t.native or not t.emulator:
        raise SystemExit(f"bench_qemu_count: {target} runs natively; time it instead")
    (tmp / "harness.c").write_text(HARNESS)
    (tmp / "counter.c").write_text(COUNTER)
    exe = tmp / "harness"
    sources = [str(p) for p in sorted(RUNTIME.glob("fg_*.c"))]
    flags = [*t.cflags, *extra, f"-I{RUNTIME}"]
    subprocess.run(
        [t.cc, *flags, str(tmp / "harness.c"), *sources, "-lm", "-o", str(exe)], check=True
    )
    subprocess.run(["cc", "-O2", str(tmp / "counter.c"), "-o", str(tmp / "counter")], check=True)
    return [*t.run_prefix(), str(exe)], tmp / "counter"


def count_layer(run: list[str], counter: Path, L: dict, tmp: Path) -> tuple[int, str]:
    """Guest instructions of one kernel call with the layer's shape, and its algorithm."""
    fifo = tmp / "log.fifo"
    if not fifo.exists():
        os.mkfifo(fifo, 0o600)
    # the shell opens the FIFO for the counter (blocking until qemu opens it to write)
    reader = subprocess.Popen(
        ["sh", "-c", 'exec "$0" < "$1"', str(counter), str(fifo)],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = " ".join(str(v) for v in L.values())
    q = subprocess.run(
        [run[0], "-d", "in_asm,exec,nochain", "-D", str(fifo), *run[1:]],
        input=line,
        capture_output=True,
        text=True,
    )
    total, missing = (int(v) for v in reader.communicate()[0].split())
    q.check_returncode()
    if missing:
        raise RuntimeError(f"{missing} executed blocks had no translation in the log")
    return total, q.stdout.strip()


def bench(models: list[str], target: str, extra: list[str]) -> dict:
    result = {}
    with tempfile.TemporaryDirectory(prefix="faustgen-count-") as t:
        tmp = Path(t)
        run, counter = build(target, tmp, extra)
        for name in models:
            layers = conv_layers(cnn_onnx(name, tmp)[0])
            count = Counter(key(L) for L in layers)
            unique = list({key(L): L for L in layers}.values())
            counted = [count_layer(run, counter, L, tmp) for L in unique]
            total = sum(count[key(L)] * n for L, (n, _) in zip(unique, counted, strict=True))
            rows = [
                {
                    **L,
                    "count": count[key(L)],
                    "algorithm": algo,
                    "instructions": n,
                    "macs_per_instruction": flops(L) / 2 / n,
                    "share": count[key(L)] * n / total,
                }
                for L, (n, algo) in zip(unique, counted, strict=True)
            ]
            result[name] = {"total_instructions": total, "layers": rows}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=MODELS[0], help=f"comma-separated, of {MODELS}")
    ap.add_argument("--target", default="rpi64")
    ap.add_argument(
        "--cflags", default="", help="added to the target's, e.g. -DFG_CONV_PGEMM=0 (plain C)"
    )
    a = ap.parse_args()
    for name, m in bench(a.models.split(","), a.target, a.cflags.split()).items():
        print(
            f"\n{name} ({a.target}): convolutions {m['total_instructions'] / 1e9:.2f} G "
            "instructions (one inference, counted under qemu)"
        )
        print("| layer | × | algorithm | M instructions | MAC / instruction | share |")
        print("|---|---|---|---|---|---|")
        for r in m["layers"]:
            print(
                f"| {describe(r)} | {r['count']} | {r['algorithm']} | "
                f"{r['instructions'] / 1e6:.1f} | {r['macs_per_instruction']:.2f} | "
                f"{100 * r['share']:.1f} % |"
            )


if __name__ == "__main__":
    main()
