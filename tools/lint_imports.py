"""Run import-linter (``lint-imports``) on the ``emostream`` namespace as it installs.

Why a wrapper: the repository keeps one folder per layer (``edge/``, ``reasoner/`` …) and the build
maps them into ``emostream.*`` (``[tool.setuptools.package-dir]``). import-linter's graph builder
(grimp) walks the package *directory* of ``emostream`` and knows nothing of that mapping, so plain
``lint-imports`` in the repository sees an ``emostream`` without its layers. This script assembles
the installed shape as a tree of symbolic links under ``.cache/layers/`` (``emostream/edge`` ->
``edge/`` …, read from pyproject.toml, so a new layer needs no change here) and runs import-linter
there with the contracts of ``[tool.importlinter]``. Exit code: import-linter's (0 = contracts kept).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def package_dirs(pyproject: Path) -> dict[str, str]:
    """``{"emostream.edge": "edge", …}`` from ``[tool.setuptools.package-dir]`` (no TOML parser on 3.10)."""
    text = pyproject.read_text()
    section = re.search(r"^\[tool\.setuptools\.package-dir\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
    if section is None:
        raise SystemExit(f"{pyproject}: no [tool.setuptools.package-dir] section")
    return dict(re.findall(r'^"([\w.]+)"\s*=\s*"([^"]+)"', section.group(1), re.M))


def build_tree(root: Path, repo: Path = REPO) -> Path:
    """Symlink the mapped packages into ``root`` as one ``emostream`` tree; returns ``root``."""
    mapping = package_dirs(repo / "pyproject.toml")
    if root.exists():
        shutil.rmtree(root)
    for name, folder in sorted(mapping.items(), key=lambda kv: kv[0].count(".")):
        target = root.joinpath(*name.split("."))
        source = (repo / folder).resolve()
        if name.count(".") == 0:  # the namespace root: a real folder, its modules linked one by one
            target.mkdir(parents=True)
            for item in source.iterdir():
                if item.suffix == ".py":
                    os.symlink(item, target / item.name)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(source, target)
    return root


def main(repo: Path = REPO) -> int:
    """Lint ``repo`` (default: this checkout; the tests pass a copy with a planted violation)."""
    tree = build_tree(repo / ".cache" / "layers", repo)
    from importlinter.cli import lint_imports

    os.chdir(tree)  # import-linter puts the working directory first on sys.path
    sys.path.insert(0, str(tree))
    return lint_imports(config_filename=str(repo / "pyproject.toml"), no_cache=True, no_logo=True)


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else REPO))
