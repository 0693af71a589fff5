"""Imports run one way (DESIGN.md): ``cluster/`` and ``admin/`` use ``broker/``, ``broker/``
imports neither, and only the composition root (``rsbroker/``) imports all three.

Two checks, because each misses what the other sees: the source check finds imports inside
functions (a lazy import is still a dependency), the fresh interpreter finds anything that
loads the other packages at import time by any route.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_BROKER = ("cluster", "admin", "rsbroker")


def _imported_packages(path: Path) -> set[tuple[int, str]]:
    """(line, top-level package) of every absolute import in ``path``, wherever it stands."""
    found: set[tuple[int, str]] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.lineno, node.module.split(".")[0]))
    return found


def _loaded_after(code: str) -> list[str]:
    """Module names in sys.modules after running ``code`` in a fresh interpreter."""
    probe = code + "\nimport sys\nprint('\\n'.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    return done.stdout.split()


def test_no_broker_module_imports_cluster_admin_or_the_root_even_lazily() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {package}"
        for path in sorted((ROOT / "broker").rglob("*.py"))
        for line, package in sorted(_imported_packages(path))
        if package in FORBIDDEN_IN_BROKER
    ]
    assert offenders == []


def test_importing_every_broker_module_loads_no_cluster_or_admin_module() -> None:
    loaded = _loaded_after(
        "import importlib, pkgutil, broker\n"
        "names = [m.name for m in pkgutil.walk_packages(broker.__path__, 'broker.')]\n"
        "assert len(names) > 30, names\n"
        "for name in names: importlib.import_module(name)"
    )
    assert "broker.relay" in loaded and "broker.client.cluster" in loaded  # the walk really imported them
    assert [m for m in loaded if m.split(".")[0] in FORBIDDEN_IN_BROKER] == []


def test_the_raft_and_swim_packages_import_no_shell_code() -> None:
    """``cluster.raft`` and ``cluster.swim`` import nothing themselves, and their sans-IO cores
    and simulators load none of the asyncio shells (tests/raft/test_sim.py checks the Raft
    core alone)."""
    bare = _loaded_after("import cluster.raft, cluster.swim")
    assert sorted(m for m in bare if m.startswith(("cluster.", "broker", "asyncio"))) == ["cluster.raft", "cluster.swim"]
    cores = _loaded_after("import cluster.swim.core, cluster.swim.sim, cluster.raft.core, cluster.raft.sim")
    shells = ("cluster.swim.node", "cluster.raft.node", "cluster.raft.transport", "cluster.runtime", "cluster.links")
    assert "cluster.swim.sim" in cores and "cluster.raft.sim" in cores
    assert [m for m in cores if m in shells] == []
