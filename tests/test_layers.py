"""No module imports from a layer above its own: the layout shows the architecture.

From the bottom: what everything may use (errors, the key's redaction, the
state both planner and store share, pure helpers of the request core); pure
logic (validation, planning, deletion rules, the limiter and pace); the
outside world (the schema, the database, the API and image hosts, files);
a run's parts (the sync, the archive job, status); the wiring (app,
scheduler); the command line. The fake API stands apart: it uses nothing of
syncd but its own modules. Imports inside functions count as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "syncd"

LAYERS: list[set[str]] = [
    {
        "syncd",
        "syncd.api",
        "syncd.archive",
        "syncd.fakeapi",
        "syncd.net",
        "syncd.sync",
        "syncd.errors",
        "syncd.redaction",
        "syncd.state",
        "syncd.notify",
        "syncd.signals",
        "syncd.net.retry",
        "syncd.net.encoding",
        "syncd.net.deadline",
        "syncd.net.inflight",
        "syncd.archive.plan",
        "syncd.locations",
        "syncd.wording",
        "syncd.owners",
        "syncd.fakeapi.data",
        "syncd.fakeapi.server",
        "syncd.fakeapi.images",
    },
    {
        "syncd.config",
        "syncd.records",
        "syncd.log",
        "syncd.metrics",
        "syncd.net.limiter",
        "syncd.net.pace",
        "syncd.net.core",
        "syncd.api.body",
        "syncd.sync.planner",
        "syncd.sync.refresh",
        "syncd.sync.deletions",
        "syncd.archive.store",
    },
    {
        "syncd.models",
        "syncd.db",
        "syncd.locks",
        "syncd.store",
        "syncd.api.client",
        "syncd.archive.files",
        "syncd.archive.s3",
        "syncd.archive.fetch",
        "syncd.archive.rows",
        "syncd.archive.discover",
        "syncd.archive.verify",
        "syncd.archive.judge",
    },
    {
        "syncd.sync.runs",
        "syncd.sync.pages",
        "syncd.sync.context",
        "syncd.sync.listing",
        "syncd.sync.byid",
        "syncd.sync.engine",
        "syncd.archive.job",
        "syncd.status",
    },
    {"syncd.app", "syncd.scheduler"},
    {"syncd.clitools", "syncd.check", "syncd.cli", "syncd.demo", "syncd.fakeapi.cli", "syncd.__main__"},
]
FAKE = {"syncd.fakeapi.data", "syncd.fakeapi.server", "syncd.fakeapi.images"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "syncd":
            for alias in node.names:  # "from syncd import store" imports the module syncd.store
                name = f"{node.module}.{alias.name}"
                found.add(name if name in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "syncd")
    return found


def layer_of(module: str) -> int:
    for number, layer in enumerate(LAYERS):
        if module in layer:
            return number
    raise AssertionError(f"{module} is in no layer: add it to tests/test_layers.py")


def test_every_module_has_a_layer() -> None:
    for module in modules():
        layer_of(module)


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_module_imports_from_a_layer_above_its_own(module: str) -> None:
    known = set(modules())
    own = layer_of(module)
    above = sorted(dep for dep in imports_of(modules()[module], known) - {module} if layer_of(dep) > own)
    assert not above, f"{module} (layer {own}) imports {above}, above it"
    if not module.startswith("syncd.sync") and own < layer_of("syncd.app"):
        # The sync's own modules, pure ones included, are the sync's: below the
        # wiring, nothing outside it reaches into them (shared bookkeeping is
        # syncd.state; the request machinery is syncd.net).
        into_sync = sorted(
            dep for dep in imports_of(modules()[module], known) if dep.startswith("syncd.sync.")
        )
        assert not into_sync, f"{module} reaches into the sync package: {into_sync}"
    if module in FAKE:
        outside = sorted(dep for dep in imports_of(modules()[module], known) if dep not in FAKE | {"syncd"})
        assert not outside, f"the fake API ({module}) uses {outside}: it stands apart from syncd"


def test_test_modules_share_helpers_through_conftest_only() -> None:
    """A helper one test module imports from another drags that module's tests
    and fixtures along and hides where shared code lives: it belongs in
    tests/conftest.py (or a helper module of its own, as tests/s3server.py)."""
    tests = Path(__file__).resolve().parent
    crossing = []
    for path in sorted(tests.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            crossing += [f"{path.name}: {name}" for name in names if name.startswith("tests.test_")]
    assert not crossing
