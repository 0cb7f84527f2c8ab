"""The whole operator test set under AddressSanitizer + UBSan and under valgrind, and compiled
with clang's strict warnings: every case's bundle (prefix c<i>, so they link together) goes
into one driver program, run once per tool."""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pytest

from faustgen.codegen.render import RUNTIME_SOURCES
from faustgen.compiler import BuildOptions, build_bundle
from faustgen.resources import data_dir
from tests.conftest import STRICT
from tests.ops.test_onnx_node_cases import UNSUPPORTED, _cases, case_names, single_input_model

DRIVER = """#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
{includes}
typedef int (*infer_fn)(const float *, float *, int);
static const struct {{ infer_fn fn; int in_size, out_size; }} cases[] = {{
{table}
}};
int main(int argc, char **argv)
{{
    int i;
    (void)argc;
    for (i = 0; i < (int)(sizeof cases / sizeof cases[0]); ++i) {{
        char path[4096];
        float *x = (float *)malloc((size_t)cases[i].in_size * sizeof(float));
        float *y = (float *)malloc((size_t)cases[i].out_size * sizeof(float));
        FILE *f;
        snprintf(path, sizeof path, "%s/in%d.bin", argv[1], i);
        f = fopen(path, "rb");
        if (!f || fread(x, sizeof(float), (size_t)cases[i].in_size, f) !=
                      (size_t)cases[i].in_size) return 2;
        fclose(f);
        if (cases[i].fn(x, y, 1) != 0) return 3;
        snprintf(path, sizeof path, "%s/out%d.bin", argv[1], i);
        f = fopen(path, "wb");
        fwrite(y, sizeof(float), (size_t)cases[i].out_size, f);
        fclose(f);
        free(x);
        free(y);
    }}
    return 0;
}}
"""


@pytest.fixture(scope="module")
def all_cases(tmp_path_factory):
    d = tmp_path_factory.mktemp("allcases")
    names = [n for n in case_names() if n not in UNSUPPORTED]
    entries, wrappers = [], []
    for i, name in enumerate(names):
        model, x, expected = single_input_model(_cases()[name])
        onnx.save(model, d / f"{i}.onnx")
        build_bundle(
            d / f"{i}.onnx", d / f"b{i}", BuildOptions(prefix=f"c{i}", dense=True, compile=False)
        )
        np.ascontiguousarray(x, np.float32).tofile(d / f"in{i}.bin")
        ref = np.concatenate([e.reshape(-1).astype(np.float32) for e in expected])
        entries.append((i, x.size, ref))
        wrappers.append(_wrapper(i, x, expected))
    includes = "\n".join(f'#include "b{i}/c{i}.h"' for i, _, _ in entries)
    includes += "\n" + "\n".join(wrappers)
    table = "\n".join(f"    {{w{i}, {n_in}, {ref.size}}}," for i, n_in, ref in entries)
    (d / "driver.c").write_text(DRIVER.format(includes=includes, table=table))
    return d, entries


def _wrapper(i, x, expected) -> str:
    """w<i>(x, y, batch): case i's PREFIX_infer on float buffers (Boolean inputs and outputs
    as bytes, several outputs back to back in y)."""
    body = ["    int rc, k;"]
    args = ["x"]
    if x.dtype == np.bool_:
        body += [
            f"    uint8_t *xi = (uint8_t *)malloc({x.size});",
            f"    for (k = 0; k < {x.size}; ++k) xi[k] = (uint8_t)(x[k] != 0.0f);",
        ]
        args = ["xi"]
    tail, off = [], 0
    for j, e in enumerate(expected):
        if e.dtype == np.bool_:
            body.append(f"    uint8_t *o{j} = (uint8_t *)malloc({max(e.size, 1)});")
            args.append(f"o{j}")
            tail += [
                f"    for (k = 0; k < {e.size}; ++k) y[{off} + k] = (float)o{j}[k];",
                f"    free(o{j});",
            ]
        else:
            args.append(f"y + {off}")
        off += e.size
    body.append(f"    rc = c{i}_infer({', '.join(args)}, batch);")
    if x.dtype == np.bool_:
        tail.append("    free(xi);")
    return "\n".join(
        [
            f"static int w{i}(const float *x, float *y, int batch)",
            "{",
            *body,
            *tail,
            "    (void)k;",
            "    return rc;",
            "}",
        ]
    )


def _build(d, entries, cc, flags, exe, link=True):
    """Compile every source (two at a time: the machine has two cores), then link."""
    rt = data_dir("runtime_c")
    srcs = [
        d / "driver.c",
        *(d / f"b{i}" / f"c{i}.c" for i, _, _ in entries),
        *(rt / s for s in RUNTIME_SOURCES),
    ]
    objs = [d / f"{exe}_{k}.o" for k in range(len(srcs))]

    def compile_one(k):
        return subprocess.run(
            [cc, *flags, "-I", str(rt), "-I", str(d), "-c", str(srcs[k]), "-o", str(objs[k])],
            capture_output=True,
            text=True,
        )

    with ThreadPoolExecutor(2) as pool:
        for proc in pool.map(compile_one, range(len(srcs))):
            if proc.returncode != 0:
                return proc
    if not link:
        return proc
    return subprocess.run(
        [cc, *flags, "-o", str(d / exe), *map(str, objs), "-lm"], capture_output=True, text=True
    )


def _check_outputs(d, entries):
    bad = []
    for i, _, ref in entries:
        y = np.fromfile(d / f"out{i}.bin", np.float32)
        err = np.max(np.abs(y - ref)) if ref.size else 0.0
        if y.shape != ref.shape or err > 1e-3 * max(np.max(np.abs(ref)), 1e-6):
            bad.append(i)
    assert not bad, f"cases with wrong outputs: {bad}"


def test_operator_cases_under_asan_ubsan(all_cases):
    d, entries = all_cases
    flags = [f for f in STRICT if f != "-std=c99"] + [
        "-std=c99",
        "-O1",
        "-g",
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all",
    ]
    proc = _build(d, entries, "gcc", flags, "asan")
    if proc.returncode != 0 and "asan" in proc.stderr.lower():
        pytest.skip(f"sanitizer runtime unavailable: {proc.stderr[:200]}")
    assert proc.returncode == 0, proc.stderr[:2000]
    run = subprocess.run([str(d / "asan"), str(d)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "runtime error" not in run.stderr and "Sanitizer" not in run.stderr
    _check_outputs(d, entries)


def test_operator_cases_under_valgrind(all_cases):
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed (apt-get install valgrind)")
    d, entries = all_cases
    proc = _build(d, entries, "gcc", [*STRICT, "-O1", "-g"], "plain")
    assert proc.returncode == 0, proc.stderr[:2000]
    run = subprocess.run(
        ["valgrind", "--error-exitcode=1", "--leak-check=full", "-q", str(d / "plain"), str(d)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    _check_outputs(d, entries)


def test_operator_cases_compile_with_clang_strict(all_cases):
    if shutil.which("clang") is None:
        pytest.skip("clang is not installed (apt-get install clang)")
    d, entries = all_cases
    proc = _build(d, entries, "clang", [*STRICT, "-O1"], "clang_build", link=False)
    assert proc.returncode == 0, proc.stderr[:2000]
