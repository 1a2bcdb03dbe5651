"""bench/gpu_check.py runs anywhere: on a machine without CUDA it says so and exits 3."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "bench", "gpu_check.py")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: run "
                    "bench/gpu_check.py itself")
def test_gpu_check_without_cuda_says_so_and_exits_3():
    out = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "no CUDA device is present" in out.stdout
