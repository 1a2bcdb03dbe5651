"""A task for tests/test_workers.py that really kills its process on some inputs.

It stands in for a C image decoder hitting a bad file: imported by spawned worker
processes, so it lives in a module of its own."""
from __future__ import annotations

import os
import signal
import time


def double_or_die(item: int) -> int:
    if item < 0:  # a "file" that crashes whoever decodes it
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(5)
    time.sleep(0.01)  # keep several tasks in flight when one dies
    return item * 2
