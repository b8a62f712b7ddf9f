"""Every benchmark still runs: each ``bench/*.py`` script's ``--quick`` mode, start to finish.

A benchmark nobody runs rots silently (an import moved, an option renamed); these runs catch
that. They assert that the script finishes, prints the CPU it ran on and ends with its JSON
line; they assert no speed (speed is read from the scripts' own output, never in a test).
Slow: minutes in all, most of it building indexes with the embedded model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
HELPERS = {"hostinfo.py", "manpages.py"}  # imported by the benchmarks, not ones themselves
SCRIPTS = sorted(p.name for p in (ROOT / "bench").glob("*.py") if p.name not in HELPERS)
NEEDS_DATA = {"encode.py", "processes.py", "faq.py", "hybrid.py", "recall.py", "serve.py", "sts.py", "build.py", "query.py",
              "whitening.py"}

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_every_script_is_covered():
    assert len(SCRIPTS) >= 9, SCRIPTS
    for name in SCRIPTS:
        source = (ROOT / "bench" / name).read_text(encoding="utf-8")
        assert '"--quick"' in source, f"bench/{name} has no --quick mode"
        assert '"benchmark"' in source, f"bench/{name} prints no JSON line"


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_quick_mode_runs(script, tmp_path):
    if script in NEEDS_DATA and not SHARED_DATA.is_dir():
        pytest.skip(f"evaluation data not found at {SHARED_DATA}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--quick"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert lines, done.stderr[-3000:]
    result = json.loads(lines[-1])
    assert result["benchmark"]
    assert "skipped" not in done.stderr.lower(), done.stderr[-2000:]
    assert result.get("cpu") and result.get("cpu_flags") is not None, "the JSON line must name the CPU"
