"""keep_freed_memory: freed large blocks are reused instead of mapped and faulted in again.

Counts page faults (not time) in fresh processes: the same loop of 100 MB tensors, each
written in full and freed, with glibc's defaults and after keep_freed_memory(). (torch,
not numpy: numpy asks for huge pages on large arrays, which hides the cost.)
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LOOP = """
import resource, sys
import torch
from search.encoder.allocator import keep_freed_memory
took = keep_freed_memory() if sys.argv[1] == "keep" else None
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    a = torch.ones(100 * 2**20, dtype=torch.uint8)  # every page touched
    del a
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", LOOP, mode], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    took, count = out.stdout.split()
    return took, int(count)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_are_reused_not_faulted_in_again():
    _, plain = faults("plain")
    took, kept = faults("keep")
    assert took == "True"
    pages = 100 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    if huge_pages_always():  # fresh maps come in 2 MB pages: few faults either way
        assert kept <= plain
        return
    assert plain >= 15 * pages  # glibc maps each 100 MB block afresh: ~20 x its pages
    assert kept <= 8 * pages  # faulted in a few times (2 to 6 here), then reused


def huge_pages_always() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="ascii") as f:
            return "[always]" in f.read()
    except OSError:
        return False
