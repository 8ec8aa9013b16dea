"""The plan of the house, checked from the code: which rooms may import which, the torch-free floor,
and the size of rooms and functions. A new module lands in a room; these say when it landed in the wrong one."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

ROOMS_BELOW = {
    "densecam_core.vocabulary": set(),
    "densecam_core.fileio": set(),
    "densecam_core.options": set(),
    "densecam_core.parallel": {"densecam_core.fileio"},
    "densecam_core.data": {"densecam_core.vocabulary", "densecam_core.fileio", "densecam_core.parallel"},
    "densecam_core.store": {
        "densecam_core.vocabulary",
        "densecam_core.fileio",
        "densecam_core.parallel",
        "densecam_core.data",
    },
    "densecam_core.model": {
        "densecam_core.vocabulary",
        "densecam_core.fileio",
        "densecam_core.data",
        "densecam_core.options",  # TrainConfig's fields carry their command-line form
    },
    "densecam_core.cam": {"densecam_core.vocabulary", "densecam_core.data", "densecam_core.model"},
    "densecam_core.export": {
        "densecam_core.vocabulary",
        "densecam_core.fileio",
        "densecam_core.parallel",
        "densecam_core.data",
        "densecam_core.store",
        # the report page shows what the evaluation, a comparison, the audit and the weak labels concluded
        "densecam_core.evaluation",
        "densecam_core.analysis",
    },
    "densecam_core.evaluation": {
        "densecam_core.vocabulary",
        "densecam_core.fileio",
        "densecam_core.data",
        "densecam_core.model",
        "densecam_core.cam",
        "densecam_core.store",
        "densecam_core.analysis",  # box and Otsu geometry shared with the weak labels (torch-free)
    },
    "densecam_core.analysis": {
        "densecam_core.vocabulary",
        "densecam_core.fileio",
        "densecam_core.parallel",
        "densecam_core.data",
        "densecam_core.store",
    },
    "jobs.runtime": {"densecam_core"},
    "jobs.audit": {"densecam_core", "jobs.runtime"},
    "jobs.localise": {"densecam_core", "jobs.runtime", "jobs.audit.config"},
    "jobs.explain": {"densecam_core", "jobs.runtime"},
    "jobs.evaluate": {"densecam_core", "jobs.runtime"},
}
"""Each room and the rooms it may import besides itself (a prefix allows everything below it). Data flows
one way: jobs -> evaluation -> (cam, store) -> (model, data) -> (vocabulary, fileio)."""

TORCH_FREE = [
    "densecam_core",
    "densecam_core.vocabulary",
    "densecam_core.fileio",
    "densecam_core.options",
    "densecam_core.parallel.shared_block",
    "densecam_core.parallel.spawned",
    "densecam_core.data.decode",
    "densecam_core.data.decode_task",
    "densecam_core.data.preprocess",
    "densecam_core.data.geometry",
    "densecam_core.data.overlay",
    "densecam_core.data.manifest",
    "densecam_core.data.sources",
    "densecam_core.data.sources.dicomweb",
    "densecam_core.export.send",
    "densecam_core.data.dicom",
    "densecam_core.data.dicom_metadata",
    "densecam_core.data.pseudonyms",
    "densecam_core.model.labels",
    "densecam_core.store.reader",
    "densecam_core.store.targets",
    "densecam_core.export.run_export",
    "densecam_core.export.report",
    "densecam_core.store.writer",
    "densecam_core.store.shard",
    "densecam_core.store.compact",
    "densecam_core.store.verify",
    "densecam_core.store.scores",
    "densecam_core.store.inputs.cache",
    "densecam_core.store.inputs.lookup",
    "densecam_core.store.inputs.verify",
    "densecam_core.store.analyses",
    "densecam_core.store.confined",
    "densecam_core.data.codestream",
    "densecam_core.data.deflated",
    "densecam_core.data.shortcuts",
    "densecam_core.analysis.audit",
    "densecam_core.analysis.clustering",
    "densecam_core.analysis.paste",
    "densecam_core.analysis.body",
    "jobs.audit.config",
    "jobs.audit.job",
    "densecam_core.analysis.localise",
    "densecam_core.analysis.regions",
    "densecam_core.analysis.wsol",
    "densecam_core.export.weak_labels",
    "densecam_core.store.localisations",
    "jobs.localise.config",
    "jobs.demo_config",
    "jobs.localise.command",
    "densecam_core.evaluation.localisation",
    "densecam_core.analysis.pointing",
    "densecam_core.evaluation.quality",
    "densecam_core.evaluation.families",
    "densecam_core.evaluation.sampling",
    "densecam_core.analysis.comparison",
    "densecam_core.analysis.comparison_summary",
    "densecam_core.analysis.figures",
    "jobs.explain.config",
    "jobs.evaluate.config",
    "jobs.cli.generated",
]
"""What notebooks, decode processes and the writer process import: never torch, never Ray."""


def modules() -> dict[str, Path]:
    found = {}
    for package in ("densecam_core", "jobs"):
        for path in sorted((REPO / package).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def imported(path: Path) -> set[str]:
    """Every densecam module a file imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("densecam_core", "jobs"):
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.split(".")[0] in ("densecam_core", "jobs"))
    known = modules()
    return {n for n in names if n in known}


def room_of(module: str) -> str | None:
    return max((r for r in ROOMS_BELOW if module == r or module.startswith(r + ".")), key=len, default=None)


def test_no_room_imports_a_room_above_it():
    wrong = []
    for module, path in modules().items():
        room = room_of(module)
        if room is None:
            continue
        allowed = ROOMS_BELOW[room] | {room}
        for target in imported(path):
            if target == "densecam_core" and room != "densecam_core.vocabulary":
                continue  # the package itself: `from densecam_core import fileio`
            if not any(target == a or target.startswith(a + ".") for a in allowed):
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_the_library_never_imports_the_jobs():
    assert not [
        m
        for m, p in modules().items()
        if m.startswith("densecam_core") and any(t.startswith("jobs") for t in imported(p))
    ]


def test_no_import_cycles_at_module_level():
    """Top-level imports only: an import inside a function runs later and cannot deadlock a start-up."""
    graph: dict[str, set[str]] = {}
    known = modules()
    for module, path in known.items():
        tree = ast.parse(path.read_text())
        targets = set()
        for node in tree.body:
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.split(".")[0] in ("densecam_core", "jobs")
            ):
                targets.add(node.module)
                targets.update(f"{node.module}.{a.name}" for a in node.names)
        graph[module] = {t for t in targets if t in known and t != module}
    seen: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        seen[node] = 1
        for nxt in graph[node]:
            if seen.get(nxt) == 1 and not node.startswith(nxt + "."):  # a package's __init__ re-exporting a child
                cycles.append([*trail, nxt])
            elif nxt not in seen:
                visit(nxt, [*trail, nxt])
        seen[node] = 2

    for module in graph:
        if module not in seen:
            visit(module, [module])
    assert not cycles, cycles[:3]


def test_rooms_stay_small_and_functions_short():
    long_files = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > 400}
    long_functions = []
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long_functions.append(f"{module}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long_files and not long_functions, (long_files, long_functions)


def test_the_floor_imports_neither_torch_nor_ray():
    code = (
        "import importlib, json, sys\n"
        f"for name in {TORCH_FREE!r}: importlib.import_module(name)\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'ray': 'ray' in sys.modules}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1]) == {"torch": False, "ray": False}


@pytest.mark.parametrize("module", sorted(modules()))
def test_every_module_has_a_docstring_that_says_why(module):
    """Packages too: their docstring says what the room holds."""
    assert ast.get_docstring(ast.parse(modules()[module].read_text())), f"{module} has no module docstring"
