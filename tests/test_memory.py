"""``index.model.memory``: PyTorch's activations reuse freed heap instead of fresh pages.

Checked by what it is for, in a child process (the setting is process-wide): a large block
allocated, written, freed and allocated again costs a page fault per 4 KiB page each time with
glibc's defaults, and almost none once the thresholds are raised. Counts, not times.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHILD = r"""
import ctypes, json, resource, sys
from index.model.memory import keep_freed_memory
raised = keep_freed_memory() if sys.argv[1] == "raise" else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 48 << 20  # over glibc's 32 MiB mmap ceiling, like a batch's activations
def block():  # allocated, written (every page), freed: what a layer's activations go through
    address = libc.malloc(SIZE)
    ctypes.memset(address, 1, SIZE)
    libc.free(address)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block()
before = faults()
for _ in range(5):
    block()
print(json.dumps({"raised": raised, "faults": faults() - before}))
"""


def run_child(mode: str, **env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    default, raised = run_child("default"), run_child("raise")
    pages = 5 * (48 << 20) // 4096
    assert not default["raised"] and default["faults"] > pages // 2  # a fresh mapping every time
    assert raised["raised"] and raised["faults"] < pages // 20  # the same heap block, already mapped


def test_it_can_be_switched_off_and_runs_once(monkeypatch):
    from index.model import memory

    monkeypatch.setattr(memory, "_applied", None)
    monkeypatch.setenv(memory.ENV, "system")
    assert memory.keep_freed_memory() is False
    monkeypatch.delenv(memory.ENV)
    assert memory.keep_freed_memory() is False  # decided once per process
    assert run_child("raise", SEMSEARCH_MALLOC="system")["raised"] is False
