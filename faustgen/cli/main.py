"""faustgen command line: parse the flags, call the driver (faustgen.compiler) or a command.

Exit codes: 0 success, 1 verification failed, 2 bad input or a resource ran out (one line on
stderr), 3 internal error, 130 interrupted, 141 stdout closed early (README.md lists them).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shlex
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np

from faustgen.backend import CompiledModel, load_target, target_names
from faustgen.cli import bench, report
from faustgen.cli import factorize as cli_factorize
from faustgen.compiler import BuildOptions, build_bundle
from faustgen.demo.experiment import Settings, print_table, run_experiment
from faustgen.demo.job import main_demo
from faustgen.errors import FaustgenError, VerificationError
from faustgen.factorize import DEFAULT_RCG
from faustgen.passes import FactorizePolicy
from faustgen.tune.dataaware import DataPlan
from faustgen.tune.verify import verify_bundle
from faustgen.version import __version__


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a shape like 1,3,32,32") from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"'{text}' is not a shape of positive sizes")
    return dims


class _Parser(argparse.ArgumentParser):
    """argparse with faustgen's error contract: a bad or conflicting flag is one line
    `faustgen: error: ...` on stderr and exit 2, not the usage block (subcommands' parsers
    are of this class too: add_subparsers builds them with the parent's class)."""

    def error(self, message: str):  # type: ignore[override]
        where = self.prog.removeprefix("faustgen").strip()
        say = f"{where}: {message}" if where else message
        self.exit(2, f"faustgen: error: {one_line(say)} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="faustgen",
        description="Compile ONNX neural networks into small, fast, dependency-free C.",
    )
    p.add_argument("--version", action="version", version=f"faustgen {__version__}")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    b = sub.add_parser("build", help="compile an ONNX model into a C bundle")
    b.add_argument("model", help="ONNX file")
    b.add_argument("-o", "--out", required=True, help="output directory (replaced atomically)")
    b.add_argument("--target", default="host", help="target name (see 'faustgen targets')")
    b.add_argument("--dense", action="store_true", help="no factorization: a plain ONNX->C build")
    b.add_argument("--name", default="model", help="prefix of the generated C symbols and files")
    b.add_argument("--input-shape", type=_shape, help="full input shape, e.g. 1,3,32,32")
    b.add_argument("--no-compile", action="store_true", help="write the sources only")
    b.add_argument(
        "--stream",
        action="store_true",
        help="recurrent models: also PREFIX_step(x_t, y_t) / PREFIX_reset(), one time step "
        "per call with the state kept between calls",
    )
    b.add_argument(
        "--max-params",
        type=int,
        default=None,
        help="refuse models with more constants than this, counted before any is built "
        "(default: refuse only what would not fit in the available memory)",
    )
    b.add_argument(
        "--weights",
        choices=("auto", "c", "blob", "file"),
        default="auto",
        help="where the constants go: C literals, a .bin linked by .incbin (blob), or a .bin "
        "read at start-up by PREFIX_load() (file); auto: literals up to 2 MiB, else blob",
    )
    f = b.add_argument_group(
        f"factorization (default: fully connected layers at RCG {DEFAULT_RCG:g})"
    )
    target = f.add_mutually_exclusive_group()
    target.add_argument(
        "--rcg",
        type=float,
        help="relative complexity gain per layer (dense parameters / stored factor "
        "entries); with --calib, of the whole model, split over the layers by their "
        "measured sensitivity; also factorizes convs",
    )
    target.add_argument(
        "--max-error",
        type=float,
        help="largest relative weight error per layer (with --calib: output error); "
        "the highest RCG within it is chosen",
    )
    target.add_argument(
        "--max-accuracy-drop",
        type=float,
        metavar="POINTS",
        help="with --calib and --labels: the smallest model whose predicted accuracy drop "
        "on the calibration inputs stays within POINTS percentage points",
    )
    f.add_argument("--factors", type=int, help="number of sparse factors (default: chosen)")
    f.add_argument(
        "--keep-dense",
        nargs="+",
        default=[],
        metavar="NAME",
        help="node or weight names to leave dense",
    )
    f.add_argument(
        "--convs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="factorize convolutions (default: only with --rcg/--max-error)",
    )
    f.add_argument(
        "--unstructured",
        action="store_true",
        help="unstructured sparse factors (lower error, CSR kernels) instead of 16x1 / 8x1 blocks",
    )
    f.add_argument(
        "--min-size",
        type=int,
        help=f"layers with fewer weights stay dense (default {FactorizePolicy.min_size}; "
        f"{DataPlan.min_size} with --calib)",
    )
    f.add_argument(
        "--calib",
        help="float32 .npy calibration inputs: fit each layer to its outputs on them "
        "and report output errors",
    )
    f.add_argument("--labels", help="integer .npy labels of the --calib inputs")
    f.add_argument(
        "--finetune",
        type=int,
        default=0,
        metavar="EPOCHS",
        help="fine-tune the factors on --calib to match the dense outputs",
    )
    f.add_argument("--seed", type=int, default=0)
    where = f.add_mutually_exclusive_group()
    where.add_argument(
        "--jobs", type=int, help="factorize layers in N local processes (default: one per core)"
    )
    where.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="factorize layers on a Ray cluster: auto, or ray://HOST:PORT (faustgen[cluster])",
    )
    f.add_argument(
        "--no-cache",
        action="store_true",
        help="refactorize every layer (default: reuse layers cached in $FAUSTGEN_CACHE)",
    )

    r = sub.add_parser("run", help="run a built model on inputs from a .npy file")
    r.add_argument("out", help="bundle directory written by 'faustgen build'")
    r.add_argument(
        "--input",
        required=True,
        action="append",
        help=".npy per graph input, in the model's order (repeat the flag), or one .npz "
        "keyed by input names; first axis = batch",
    )
    r.add_argument("--output", required=True, help="where to write the outputs (.npy)")

    v = sub.add_parser(
        "verify",
        help="judge a built model against a float64 evaluation, next to onnxruntime",
        description="Runs the C, onnxruntime and a float64 evaluation of the model "
        "(onnx.reference) on the same inputs. Without --rtol/--atol the C passes when "
        "max|C - float64| <= 4 x max|onnxruntime - float64| + 16 ulp of the output's scale "
        "(README: 'How verify decides').",
    )
    v.add_argument("model", help="the ONNX file the bundle was built from")
    v.add_argument("out", help="bundle directory")
    v.add_argument(
        "--input",
        action="append",
        help=".npy per graph input (repeat the flag) or one .npz keyed by input names "
        "(default: seeded random samples)",
    )
    v.add_argument(
        "--samples", type=int, default=8, help="random samples without --input (default 8)"
    )
    v.add_argument(
        "--rtol",
        type=float,
        help="instead of the rule: fail beyond atol + rtol x max|reference|",
    )
    v.add_argument("--atol", type=float, help="absolute part of that tolerance (default 0)")
    v.add_argument("--json", action="store_true", help="print the verdict as JSON")

    bn = sub.add_parser("bench", help="latency: dense C, factorized C, onnxruntime (1 thread)")
    bn.add_argument("model", help="ONNX file")
    bn.add_argument("--rcg", type=float, help="factorization target (default: the build default)")
    bn.add_argument("--batch", type=_at_least(1, int), default=1)
    bn.add_argument(
        "--repeat", type=_at_least(1, int), default=200, help="calls per round (5 rounds)"
    )
    bn.add_argument("--unstructured", action="store_true")
    bn.add_argument("--convs", action=argparse.BooleanOptionalAction, default=None)
    bn.add_argument("--json", action="store_true")

    rp = sub.add_parser("report", help="per-layer table of a build (report.json)")
    rp.add_argument("out", help="bundle directory")
    rp.add_argument("--json", action="store_true", help="print report.json")
    rp.add_argument("--plot", metavar="FILE.png", help="plot weight error vs RCG per layer")

    t = sub.add_parser("targets", help="list targets and whether their toolchains are installed")
    t.add_argument("--json", action="store_true")

    e = sub.add_parser(
        "experiment",
        help="the seed's experiment on a model: accuracy, latency, energy per method and RCG",
    )
    e.add_argument("model", help="ONNX file")
    e.add_argument("--data", required=True, help="float32 .npy evaluation inputs")
    e.add_argument("--labels", required=True, help="integer .npy labels of --data")
    e.add_argument(
        "--calib",
        help="float32 .npy calibration inputs (default: the first 1000 of --data, "
        "which are then left out of the evaluation)",
    )
    e.add_argument("--rcg", type=_floats, default=(2.0, 4.0, 8.0, 16.0), help="e.g. 2,4,8,16")
    e.add_argument("--methods", type=_words, default=("factor", "prune", "svd"))
    e.add_argument("--finetune", type=_at_least(0, int), default=0, metavar="EPOCHS")
    e.add_argument("--targets", type=_words, default=("host",), help="e.g. host,rpi64")
    e.add_argument(
        "--watts", type=_at_least(0, strict=True), help="host power in W (default: RAPL, else 6 W)"
    )
    e.add_argument("--pue", type=_at_least(1), default=1.58, help="data-centre PUE (default 1.58)")
    e.add_argument(
        "--carbon", type=_at_least(0), default=432.7, help="g CO2e per kWh (default 432.7, US avg.)"
    )
    e.add_argument("--repeat", type=_at_least(1, int), default=200, help="timed calls per round")
    e.add_argument("-o", "--out", required=True, help="directory for builds, cache, tables")

    d = sub.add_parser("demo", help="train, compile, verify and time the demo models")
    d.add_argument("--out", default="demo_out", help="working directory (default demo_out)")
    d.add_argument(
        "--epochs",
        type=_at_least(1, int),
        help="training epochs (default 5 for the MLP, 4 for LeNet-5, 1 with --quick)",
    )
    d.add_argument("--quick", action="store_true", help="small subset, for a smoke run")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")

    cli_factorize.register(sub)
    return p


def _at_least(low: float, kind=float, strict: bool = False):
    """An argparse type: a number >= low (> low with strict), refused in one line otherwise."""

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (v > low if strict else v >= low):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low:g}, got {v}")
        return v

    return parse


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 2,4,8, got {text!r}") from None
    if not values or any(not v >= 1 for v in values):
        raise argparse.ArgumentTypeError(f"RCGs must be at least 1, got {text!r}")
    return values


def _words(text: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in text.split(",") if w.strip())


def cmd_experiment(args) -> int:
    x, y = _load_npy(args.data), _load_npy(args.labels).reshape(-1)
    if x.dtype != np.float32 or len(x) != len(y) or not np.issubdtype(y.dtype, np.integer):
        raise FaustgenError(
            "--data must be float32 and --labels hold one integer class per input "
            f"(got {x.dtype} {x.shape} and {y.dtype} {y.shape})"
        )
    if args.calib:
        calib = _load_npy(args.calib)
    else:
        if len(x) < 2000:
            raise FaustgenError("give --calib, or at least 2000 --data inputs to split off 1000")
        calib, x, y = x[:1000], x[1000:], y[1000:]
    settings = Settings(
        rcgs=args.rcg,
        methods=args.methods,
        finetune=args.finetune,
        targets=args.targets,
        pue=args.pue,
        carbon=args.carbon,
        watts=args.watts,
        repeat=args.repeat,
        progress=sys.stderr.isatty(),
    )
    print_table(run_experiment(args.model, x, y, calib, args.out, settings))
    print(f"wrote {args.out}/results.md, results.json, accuracy.png, latency.png, energy.png")
    return 0


def _load_npy(path: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise FaustgenError(f"{p}: no such file")
    try:
        return np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise FaustgenError(f"{p}: not a readable .npy file ({e})") from None


def _load_inputs(paths: list[str], model: CompiledModel) -> list[np.ndarray]:
    """The model's inputs from one .npy per input, or from one .npz keyed by input names."""
    if len(paths) == 1 and paths[0].endswith(".npz"):
        p = Path(paths[0])
        if not p.is_file():
            raise FaustgenError(f"{p}: no such file")
        try:
            with np.load(p, allow_pickle=False) as z:
                given = {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError) as e:
            raise FaustgenError(f"{p}: not a readable .npz file ({e})") from None
        return model._as_list((given,))
    xs = [_load_npy(path) for path in paths]
    return model._as_list(tuple(xs))


def _save_npy(path: str, y: np.ndarray) -> None:
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".npy", dir=p.resolve().parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, y)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_build(args) -> int:
    opts = BuildOptions(
        target=args.target,
        prefix=args.name,
        dense=args.dense,
        input_shape=args.input_shape,
        command="faustgen " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "faustgen build",
        compile=not args.no_compile,
        rcg=args.rcg,
        max_error=args.max_error,
        factors=args.factors,
        keep_dense=tuple(args.keep_dense),
        convs=args.convs,
        unstructured=args.unstructured,
        min_size=args.min_size,
        calib=_load_npy(args.calib) if args.calib else None,
        labels=_load_npy(args.labels) if args.labels else None,
        max_accuracy_drop=args.max_accuracy_drop,
        finetune=args.finetune,
        seed=args.seed,
        progress=True,  # lines on a terminal; rate-limited in logs (faustgen.progress)
        max_params=args.max_params,
        jobs=args.jobs,
        ray=args.ray,
        cache=not args.no_cache,
        weights=args.weights,
        stream=args.stream,
    )
    result = build_bundle(args.model, args.out, opts)
    for m in result.messages:
        print(f"faustgen: {one_line(m)}", file=sys.stderr)
    t = result.report["totals"]
    print(
        f"built {result.out_dir}: {len(result.graph.nodes)} nodes, {t['parameters']} parameters "
        f"({t['weight_bytes']} bytes), arena {t['arena_bytes']} bytes, target "
        f"{result.report['model']['target']}"
    )
    return 0


def cmd_run(args) -> int:
    model = CompiledModel(args.out)
    y = model.predict(*_load_inputs(args.input, model))
    if isinstance(y, list):
        # Several outputs: OUTPUT gets the first; OUTPUT with _1, _2, ... the others.
        stem = args.output[:-4] if args.output.endswith(".npy") else args.output
        paths = [args.output] + [f"{stem}_{k}.npy" for k in range(1, len(y))]
        for path, arr in zip(paths, y, strict=True):
            _save_npy(path, arr)
            print(f"wrote {path}: {arr.shape} {arr.dtype}")
        return 0
    _save_npy(args.output, y)
    print(f"wrote {args.output}: {y.shape} {y.dtype}")
    return 0


def cmd_verify(args) -> int:
    for flag in ("rtol", "atol"):
        value = getattr(args, flag)
        if value is not None and not value >= 0:
            raise FaustgenError(f"--{flag} must be a non-negative number")
    if args.samples < 1:
        raise FaustgenError("--samples must be positive")
    x = _load_inputs(args.input, CompiledModel(args.out)) if args.input else None
    verdict = verify_bundle(
        args.model, args.out, x, rtol=args.rtol, atol=args.atol, samples=args.samples
    )
    for w in verdict.warnings:
        print(f"faustgen: warning: {one_line(w)}", file=sys.stderr)
    if args.json:
        print(json.dumps(verdict.as_dict(), indent=2))
    else:
        print(
            f"verify {args.out} on {verdict.samples} sample(s): "
            f"{'OK' if verdict.ok else 'FAILED'}"
            + (" (the outputs carry no signal: see the warning)" if verdict.warnings else "")
        )
        for line in verdict.notes + verdict.lines():
            print(f"  {one_line(line)}")
    if not verdict.ok:
        worst = max(verdict.outputs, key=lambda o: o.c_error / max(o.bound, 1e-300))
        raise VerificationError(
            f"output '{worst.name}' is {worst.c_error:.3g} from the reference, beyond "
            f"{worst.bound:.3g} ({verdict.decided_by} rule)"
        )
    return 0


def cmd_targets(args) -> int:
    rows = []
    for name in target_names():
        t = load_target(name)
        rows.append(
            {
                "name": name,
                "description": t.description,
                "compiler": t.cc or "-",
                "compiler_installed": t.can_compile() if t.cc else None,
                "emulator": " ".join(t.emulator) or ("native" if t.native else "-"),
                "can_run": t.can_run() if t.cc else False,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'target':8} {'compiler':26} {'installed':9} {'runs here':9}  description")
    for r in rows:
        inst = {True: "yes", False: "no", None: "-"}[r["compiler_installed"]]
        print(
            f"{r['name']:8} {r['compiler']:26} {inst:9} {'yes' if r['can_run'] else 'no':9}  "
            f"{r['description']}"
        )
    return 0


def cmd_report(args) -> int:
    r = report.load_report(args.out)
    print(json.dumps(r, indent=2) if args.json else report.format_report(r))
    if args.plot:
        report.plot_report(r, args.plot)
        print(f"wrote {args.plot}")
    return 0


COMMANDS = {
    "build": cmd_build,
    "run": cmd_run,
    "verify": cmd_verify,
    "targets": cmd_targets,
    "demo": main_demo,
    "report": cmd_report,
    "bench": bench.cmd_bench,
    "experiment": cmd_experiment,
}


def one_line(message: object) -> str:
    """A message for the terminal: model strings inside it may hold newlines or escape
    sequences, shown escaped so that the error stays one line and cannot drive the terminal."""
    return "".join(
        c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii")
        for c in str(message)
    )


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        run = cli_factorize.run if args.command == "factorize" else COMMANDS[args.command]
        code = run(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except VerificationError as e:
        if args.debug:
            traceback.print_exc()
        print(f"faustgen: verification failed: {one_line(e)}", file=sys.stderr)
        return 1
    except FaustgenError as e:
        if args.debug:
            traceback.print_exc()
        print(f"faustgen: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("faustgen: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed early (`faustgen verify ... --json | head`): stop quietly, as `cat`
        # does; later writes to the closed pipe must not raise again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as e:
        if args.debug:
            traceback.print_exc()
        message = resource_error(e, args.command)
        if message is not None:
            print(f"faustgen: error: {one_line(message)}", file=sys.stderr)
            return 2
        print(  # a bug in faustgen: still one line, with --debug for details
            f"faustgen: internal error: {type(e).__name__}: {one_line(e)} (rerun with --debug)",
            file=sys.stderr,
        )
        return 3


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def resource_error(e: BaseException, command: str) -> str | None:
    """The one-line message for a resource that ran out (memory, disk) or a place that cannot
    be written, saying what to do; None for an error that is a bug in faustgen."""
    if isinstance(e, MemoryError):
        return (
            f"out of memory during '{command}': free memory, or give the model fewer weights "
            "(--max-params refuses large models before they are loaded; --dense skips the "
            "factorization)"
        )
    if not isinstance(e, OSError):
        return None
    where = f" ({e.filename})" if e.filename else ""
    if e.errno in _DISK_FULL:
        return (
            f"no space left on the device{where} during '{command}': free disk space there, "
            "or write the output (-o) and the cache ($FAUSTGEN_CACHE) elsewhere"
        )
    if e.errno in _NOT_WRITABLE and where:
        return f"cannot write{where}: {e.strerror}; choose another output directory"
    return None
