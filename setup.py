"""The wheel carries the Ansible collection generated from the repository (kubeharden/collection.py)."""

import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildWithCollection(build_py):
    def run(self):
        # build/ outlives a build: files removed from the source since the last one would go into the wheel.
        shutil.rmtree(Path(self.build_lib) / "kubeharden", ignore_errors=True)
        super().run()
        if not self.editable_mode:  # an editable install runs from the checkout's own directories
            sys.path.insert(0, str(ROOT))
            from kubeharden import collection

            collection.write(ROOT, Path(self.build_lib) / "kubeharden" / "_ansible")


setup(cmdclass={"build_py": BuildWithCollection})
