"""The layers hold: import-linter's contracts are kept, a planted violation is caught, and the light
subcommands load none of the heavy runtimes.

Why subprocesses: ``sys.modules`` of the pytest process is full of whatever earlier tests imported;
only a fresh interpreter can show what one command really loads.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = REPO / "tools" / "lint_imports.py"
#: What a light command must not load: the edge's detector and tracker, and training's framework.
HEAVY = ("mediapipe", "torch", "supervision")
LAYER_FOLDERS = ("emostream", "streams", "edge", "engines", "calibration", "reasoner", "training")

pytest.importorskip("importlinter", reason="import-linter is in the dev extra")


def _lint(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(LINT), str(repo)], capture_output=True, text=True, timeout=120)


def test_import_contracts_are_kept() -> None:
    done = _lint(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout
    # The mapped namespace was really seen (not an empty emostream with only contract.py in it).
    analyzed = int(re.search(r"Analyzed (\d+) files", done.stdout).group(1))
    assert analyzed > 60


def _copy_repo(dest: Path) -> Path:
    shutil.copy(REPO / "pyproject.toml", dest / "pyproject.toml")
    for folder in LAYER_FOLDERS:
        shutil.copytree(REPO / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__", "models"))
    return dest


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("edge/planted.py", "from emostream.reasoner import core\n", "Layers"),
        ("reasoner/planted.py", "import emostream.edge.cli\n", "Layers"),
        ("engines/vlm/planted.py", "def f():\n    from emostream.reasoner import schema\n", "Layers"),
        ("streams/planted.py", "from emostream.engines import labels\n", "Layers"),
        ("training/planted.py", "from emostream.calibration import fusion\n", "Layers"),
        ("calibration/planted.py", "from emostream.edge import labelled\n", "Offline layers"),
        ("emostream/contract.py", "import numpy\n", "standard library only"),
        ("emostream/api.py", "def f():\n    from emostream.training import data\n", "embedding API"),
    ],
)
def test_a_planted_violation_breaks_a_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    """Each rule can fail: the same lint on a copy with one forbidden import (a lazy one included)."""
    repo = _copy_repo(tmp_path)
    path = repo / module
    path.write_text((path.read_text() if path.exists() else "") + line)  # a new module, or one more import
    done = _lint(repo)
    assert done.returncode != 0, done.stdout
    broken = [text for text in done.stdout.split("\n\n") if "BROKEN" in text]
    assert any(contract in text for text in broken), done.stdout


def test_an_import_circle_inside_a_package_breaks_a_contract(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    (repo / "engines" / "emotion" / "planted_a.py").write_text("from emostream.engines.emotion import planted_b\n")
    (repo / "engines" / "emotion" / "planted_b.py").write_text("from emostream.engines.emotion import planted_a\n")
    done = _lint(repo)
    assert done.returncode != 0 and "No import circles" in done.stdout and "BROKEN" in done.stdout, done.stdout


def test_only_two_places_compose_layers_by_module_name() -> None:
    """import-linter cannot see ``importlib.import_module("emostream.…")``: keep names of *another*
    layer to the CLI's command table and the in-process reasoner, so the lint stays meaningful.
    (A layer naming its own modules, like the engines' architecture registry, is no composition.)"""
    # The namespace root (``emostream/__init__.py``, the public API) sits above every layer and may
    # compose them; its bottom-layer modules may not.
    files = [REPO / "emostream" / f"{name}.py" for name in ("contract", "datasets", "errors", "keys")]
    files += [path for folder in LAYER_FOLDERS[1:] for path in (REPO / folder).rglob("*.py")]
    found = set()
    for path in files:
        text = path.read_text()
        if "import_module(" not in text:
            continue
        own = path.relative_to(REPO).parts[0]
        named = set(re.findall(r"[\"']emostream\.(\w+)", text))
        if named - {own}:
            found.add(path.relative_to(REPO).as_posix())
    assert found == {"edge/cli.py", "edge/escalation.py"}


def _loaded(code: str, *args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``python -X importtime -c code args``; returns the result and every top-level module imported."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)
    modules = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)$", done.stderr, re.M))
    return done, {m.split(".")[0] for m in modules}


CLI = "import sys; from emostream.edge.cli import main; sys.exit(main(sys.argv[1:]))"


def test_keys_loads_no_heavy_runtime(tmp_path: Path) -> None:
    done, top = _loaded(CLI, "keys", str(tmp_path / "keys"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "keys" / "server.key").is_file() and (tmp_path / "keys" / "authorized" / "client.key").is_file()
    assert "emostream" in top  # the import log is really read
    assert not top & set(HEAVY), sorted(top & set(HEAVY))


@pytest.mark.parametrize("entry", [CLI, "import sys; from emostream.reasoner.__main__ import main; sys.exit(main())"])
def test_reasoner_help_loads_no_heavy_runtime(tmp_path: Path, entry: str) -> None:
    done, top = _loaded(entry, "reasoner", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--bind" in done.stdout
    assert not top & set(HEAVY), sorted(top & set(HEAVY))


@pytest.mark.parametrize(
    "module",
    [
        "emostream.reasoner.commands",
        "emostream.training.commands",
        "emostream.calibration.commands",
        "emostream.edge.commands.eval",
        "emostream.edge.commands.bench",
        "emostream.edge.commands.run",
    ],
)
def test_command_modules_keep_heavy_imports_in_their_handlers(tmp_path: Path, module: str) -> None:
    """Importing a command module (what ``emostream --help`` does for each) loads no heavy runtime.

    (eval and bench take run's flag helpers inside ``register``, so they are as light as run.py is.)
    """
    done, top = _loaded(f"import {module}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not top & set(HEAVY), sorted(top & set(HEAVY))


def test_help_of_every_command_loads_no_heavy_runtime(tmp_path: Path) -> None:
    """``emostream --help`` registers every module: the sum of the above, through the real CLI."""
    done, top = _loaded(CLI, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("run", "eval", "bench", "reasoner", "keys", "calibrate"):
        assert name in done.stdout
    assert not top & set(HEAVY), sorted(top & set(HEAVY))


def test_an_unknown_command_lists_every_command(tmp_path: Path) -> None:
    """Lazy registration must not hide commands: a wrong name still gets the full list."""
    done = subprocess.run([sys.executable, "-c", CLI, "nonsense"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 2
    for name in ("run", "eval", "bench", "reasoner", "keys"):
        assert name in done.stderr
