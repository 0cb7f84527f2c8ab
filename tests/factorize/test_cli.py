"""The ``factorize`` subcommand, driven through argparse as the main CLI does."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from scipy.linalg import hadamard

from faustgen.cli import factorize as cli_factorize
from faustgen.errors import FaustgenError
from faustgen.factorize import FactorizedMatrix


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="faustgen")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_factorize.register(sub)
    return parser.parse_args(argv)


def test_factorize_writes_npz_and_reports(tmp_path, capsys) -> None:
    W = np.random.default_rng(0).standard_normal((40, 90))
    src, out = tmp_path / "W.npy", tmp_path / "F.npz"
    np.save(src, W)
    args = _parse(["factorize", str(src), "-o", str(out), "--rcg", "3", "--seed", "1"])
    assert args.command == "factorize"
    assert cli_factorize.run(args) == 0
    F = FactorizedMatrix.load(out)
    assert F.rcg >= 3.0
    text = capsys.readouterr()
    assert "RCG" in text.out and "relative error" in text.out
    assert f"{F.relative_error(W):.4g}" in text.out
    # Written atomically: no temporary file is left next to the output.
    assert {p.name for p in tmp_path.iterdir()} == {"W.npy", "F.npz"}


def test_max_error_and_butterfly_options(tmp_path) -> None:
    src, out = tmp_path / "H.npy", tmp_path / "H.npz"
    np.save(src, hadamard(32).astype(np.float32))
    args = _parse(
        [
            "factorize",
            str(src),
            "-o",
            str(out),
            "--method",
            "butterfly",
            "--max-error",
            "1e-6",
            "--factors",
            "5",
            "--no-progress",
        ]
    )
    assert cli_factorize.run(args) == 0
    F = FactorizedMatrix.load(out)
    assert F.n_factors == 5 and F.relative_error(hadamard(32)) < 1e-6


def test_rcg_and_max_error_are_exclusive(tmp_path) -> None:
    with pytest.raises(SystemExit):
        _parse(["factorize", "W.npy", "-o", "F.npz", "--rcg", "2", "--max-error", "0.1"])


def _bad(tmp_path, name: str, array=None) -> str:
    path = tmp_path / name
    if array is not None:
        np.save(path, array)
    return str(path)


@pytest.mark.parametrize(
    ("name", "array", "extra", "match"),
    [
        ("missing.npy", None, [], "does not exist"),
        ("W.txt", None, [], "not a .npy"),
        ("nan.npy", np.array([[1.0, np.nan]]), [], "NaN"),
        ("inf.npy", np.array([[1.0, -np.inf]]), [], "NaN or infinite"),
        ("vec.npy", np.ones(4), [], "2-D"),
        ("empty.npy", np.zeros((0, 3)), [], "empty"),
        ("w.npy", np.ones((6, 6)), ["--method", "butterfly"], "power-of-two"),
        ("w.npy", np.eye(4), ["--rcg", "100"], "unreachable"),
        (
            "g.npy",
            np.random.default_rng(1).standard_normal((16, 16)),
            ["--max-error", "1e-4", "--method", "butterfly", "--factors", "4"],
            "relative error",
        ),
    ],
)
def test_bad_input_is_a_faustgen_error(tmp_path, name, array, extra, match) -> None:
    src = _bad(tmp_path, name, array)
    if name.endswith(".txt"):
        (tmp_path / name).write_text("1 2 3")
    out = tmp_path / "F.npz"
    args = _parse(["factorize", src, "-o", str(out), "--no-progress", *extra])
    with pytest.raises(FaustgenError, match=match) as info:
        cli_factorize.run(args)
    message = str(info.value)
    assert "\n" not in message and message.endswith(".")
    assert not out.exists()


def test_output_must_be_npz(tmp_path) -> None:
    src = _bad(tmp_path, "W.npy", np.ones((4, 4)))
    with pytest.raises(FaustgenError, match=r"\.npz"):
        cli_factorize.run(_parse(["factorize", src, "-o", str(tmp_path / "F.bin")]))
