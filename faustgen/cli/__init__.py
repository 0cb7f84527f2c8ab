"""The commands: `faustgen build/run/verify/bench/report/targets/demo/factorize`."""

from faustgen.cli.main import main

__all__ = ["main"]
