"""Install without a clone: `python -m build` makes a wheel and an sdist whose
version is syncd.__version__, the wheel carries the documentation and the
example configuration, and `pipx install` of it gives a working `syncd`.

Slow (marked): it builds, and pipx installs the dependencies from the
package index. CI's slow tier runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from syncd import SCHEMA_REVISION, __version__

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done.stdout


def test_the_wheel_installs_with_pipx_and_carries_the_docs_and_the_example_configuration(
    tmp_path: Path,
) -> None:
    source = tmp_path / "syncd"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "*.db*", "__pycache__", "*.egg-info", "build", "dist", ".*_cache"
        ),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCD_", "VIRTUAL_ENV", "PIPX_"))}
    run([sys.executable, "-m", "build", "--outdir", str(tmp_path / "dist"), str(source)], tmp_path, env)
    wheel = tmp_path / "dist" / f"syncd-{__version__}-py3-none-any.whl"
    sdist = tmp_path / "dist" / f"syncd-{__version__}.tar.gz"
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == sorted([wheel.name, sdist.name])
    with tarfile.open(sdist) as archive:
        names = set(archive.getnames())
    for needed in ("docs/deploy.md", "deploy/syncd.toml.example", "deploy/syncd.service", "LICENSE", "tests"):
        assert f"syncd-{__version__}/{needed}" in names, needed

    home = tmp_path / "pipx"
    env.update(PIPX_HOME=str(home), PIPX_BIN_DIR=str(home / "bin"), PIPX_MAN_DIR=str(home / "man"))
    pipx = Path(sys.executable).parent / "pipx"
    run([str(pipx), "install", str(wheel)], tmp_path, env)
    syncd = home / "bin" / "syncd"
    assert run([str(syncd), "--version"], tmp_path, env).strip() == (
        f"syncd {__version__} (database schema revision {SCHEMA_REVISION})"
    )
    docs = home / "venvs" / "syncd" / "share" / "doc" / "syncd"
    for shipped, original in (
        ("syncd.toml.example", "deploy/syncd.toml.example"),
        ("syncd.service", "deploy/syncd.service"),
        ("deploy.md", "docs/deploy.md"),
        ("schema.md", "docs/schema.md"),
    ):
        assert (docs / shipped).read_text() == (REPO / original).read_text(), shipped
    # Working: the migrations and the fake API are in the wheel.
    work = tmp_path / "work"
    work.mkdir()
    demo = run([str(syncd), "demo", "--count", "60"], work, env, timeout=300)
    assert "syncd backfill run 1: success" in demo
