"""Shared fixtures: the repository's committed corpus and the CLI built beside the module
(``NAPE`` overrides it), so every test can check the Python front against the CLI."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "tests" / "corpus" / "zoo"
CELLS = ROOT / "tests" / "corpus" / "exporters" / "nb201" / "nape"


@pytest.fixture(scope="session")
def cli():
    """Runs the nape CLI with --json (or the given format flag) and parses its stdout."""
    exe = Path(os.environ.get("NAPE", ROOT / "target" / "debug" / "nape"))
    if not exe.is_file():
        pytest.fail(f"the nape CLI is not at {exe}: build it (cargo build --bins) or set NAPE")

    def run(*args, ok_codes=(0,)):
        env = dict(os.environ, OMP_NUM_THREADS="1")
        r = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, env=env, cwd=ROOT)
        assert r.returncode in ok_codes, f"nape {' '.join(map(str, args))}: exit {r.returncode}\n{r.stderr}"
        return json.loads(r.stdout)

    return run


@pytest.fixture(scope="session")
def zoo():
    files = sorted(ZOO.glob("*.onnx"))
    if not files:
        pytest.fail(f"no committed zoo files under {ZOO}")
    return files
