"""Ship the top-level templates/, runtime_c/ and targets/ inside the wheel as faustgen/_data/."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA_DIRS = ("templates", "runtime_c", "targets")


class BuildPyWithData(build_py):
    def run(self):
        super().run()
        root = Path(__file__).parent
        dest = Path(self.build_lib) / "faustgen" / "_data"
        for name in DATA_DIRS:
            target = dest / name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(
                root / name, target, ignore=shutil.ignore_patterns("*.o", "*.so", "__pycache__")
            )


setup(cmdclass={"build_py": BuildPyWithData})
