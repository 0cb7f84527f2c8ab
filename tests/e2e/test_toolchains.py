"""Every installed target compiler can build and link a C file that uses <math.h>.

A cross compiler installed without its C library (Debian's gcc-*-linux-gnu only *recommend*
libc6-dev-*-cross) fails deep inside a bundle build with `bits/libc-header-start.h: No such
file`; this test fails first, naming the packages to install. In CI (CI=true) a missing
compiler fails too: scripts/setup.sh installs them all, so a skip there is a set-up bug.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from faustgen.backend import load_target
from faustgen.backend.toolchain import target_names

SOURCE = """#include <math.h>
#include <stdio.h>
int main(int argc, char **argv) {
    (void)argv;
    printf("%.3f\\n", (double)expf((float)argc - 1.0f));
    return 0;
}
"""


@pytest.mark.parametrize("name", [n for n in target_names() if load_target(n).cc])
def test_target_compiler_has_its_c_library(name, tmp_path):
    target = load_target(name)
    if target.compiler_path is None:
        msg = f"target {name}: {target.cc} is not installed ({target.install_hint})"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    src = tmp_path / "probe.c"
    src.write_text(SOURCE)
    exe = tmp_path / "probe"
    proc = subprocess.run(
        [target.cc, *target.cflags, str(src), "-o", str(exe), *target.ldlibs],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, (
        f"target {name}: {target.cc} cannot build a <math.h> program; its C library is "
        f"missing ({target.install_hint}):\n{proc.stderr[-800:]}"
    )
    if target.can_run():
        run = subprocess.run([*target.run_prefix(), str(exe)], capture_output=True, text=True)
        assert run.returncode == 0 and run.stdout.strip() == "1.000", run.stderr[-400:]
