"""Build hook: a wheel carries schema.sql, templates/ and static/ as ``securechat/resources/``.

The product brief keeps them at the top of the repository, outside the package, where
``[tool.setuptools] package-data`` cannot reach. securechat/config.py looks for them in
``securechat/resources/`` first (an installed wheel), then at the top of a checkout. They are
copied into the build directory only, never into the source tree, and not at all for an editable
install, which reads them from the checkout. MANIFEST.in puts them in the sdist, so a wheel built
from the sdist has them too. Everything else about the project is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SOURCE = Path(__file__).resolve().parent
RESOURCES = ("schema.sql", "templates", "static")


class BuildPyWithResources(build_py):
    """``build_py``, then a fresh copy of the top-level resources into the built package."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / "securechat" / "resources"
        # Start afresh: a file deleted from static/ must not live on from an earlier build.
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for name in RESOURCES:
            source = SOURCE / name
            if source.is_dir():
                shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, target / name)


setup(cmdclass={"build_py": BuildPyWithResources})
