"""``CLIPSEARCH_PRECISION``: which forward pass runs, and what ``auto`` picks.

Modes (:data:`MODES`):

* ``fp32``: eager PyTorch, the reference every other mode is measured against;
* ``fp32-ov``: the same fp32 arithmetic compiled by OpenVINO (fused attention, GELU and
  layer norms; f32 inference precision), ~1.2x eager on the benchmark CPU;
* ``bf16``: OpenVINO, bf16 arithmetic (CPUs with native bf16 only);
* ``int8``: OpenVINO, NNCF static int8 quantization, calibrated;
* ``fp16``: PyTorch autocast on CUDA;
* ``auto``: on CUDA ``fp16``; on the CPU the fastest mode that the fidelity table
  (:data:`FIDELITY_FILE`, written by ``bench/bench_fidelity.py --record``) lists as
  faithful *for this model*: top-10 search agreement with fp32 >= 0.98 and
  recall@10 within 0.5 points of fp32. A model the table does not know gets fp32:
  the faster modes are fast everywhere but faithful only where measured (naive int8
  of a trained text tower fell to 0.81 top-10 agreement).

Speed order on the CPU, measured on the benchmark machine (docs/benchmarks.md,
"CPU forward runtimes"): int8 > bf16 > fp32-ov > fp32. ``fp32-ov`` goes through the same
gate as the others: reordered fp32 sums are close to eager but not identical, and a model
whose similarities crowd together (random weights) can reorder its ranking on less.
"""
from __future__ import annotations

import json
import logging
import os

from ..errors import BadRequest
from .base import ModelIdentity

log = logging.getLogger(__name__)

MODES = ("auto", "fp32", "fp32-ov", "bf16", "int8", "fp16")
CPU_MODES = ("fp32-ov", "bf16", "int8")  # OpenVINO, CPU only
CPU_SPEED_ORDER = ("int8", "bf16", "fp32-ov", "fp32")
FIDELITY_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fidelity.json")
MIN_TOP10_AGREEMENT = 0.98
MAX_RECALL_DROP_POINTS = 0.5


def check_mode(mode: str) -> str:
    mode = (mode or "auto").strip().lower()
    if mode not in MODES:
        raise BadRequest(f"precision must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def model_key(identity: ModelIdentity) -> str:
    return f"{identity.name}|{identity.pretrained}"


def fidelity_table(path: str = FIDELITY_FILE) -> dict:
    """``{model key: {mode: measurements}}``; empty when the file is missing."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f).get("models", {})
    except FileNotFoundError:
        return {}


def passes(entry: dict) -> bool:
    """The gate of ``auto``: one fidelity entry (see bench/bench_fidelity.py) meets both limits."""
    agree = entry.get("top10_agreement_min")
    drop = entry.get("recall10_drop_points")
    return (agree is not None and agree >= MIN_TOP10_AGREEMENT
            and (drop is None and entry.get("recall_not_applicable", False)
                 or drop is not None and drop <= MAX_RECALL_DROP_POINTS))


def faithful_modes(identity: ModelIdentity, table: dict | None = None) -> list[str]:
    """Modes the table lists as faithful for ``identity``'s weights (any order)."""
    table = fidelity_table() if table is None else table
    entry = table.get(model_key(identity), {})
    return [mode for mode, m in entry.items() if isinstance(m, dict) and passes(m)]


def choose(requested: str, identity: ModelIdentity, device: str, *, available: set[str],
           table: dict | None = None) -> str:
    """The mode to run. ``available``: modes this machine can run at all."""
    requested = check_mode(requested)
    cuda = device.startswith("cuda")
    if requested != "auto":
        if requested == "fp16" and not cuda:
            raise BadRequest("precision fp16 needs a CUDA device (CLIPSEARCH_DEVICE=cuda)")
        if requested in CPU_MODES and cuda:
            raise BadRequest(f"precision {requested} is a CPU mode; on CUDA use fp16 or fp32")
        if requested not in available and requested != "fp32":
            raise BadRequest(f"precision {requested} is not available on this machine "
                             f"(available: {', '.join(sorted(available))})")
        return requested
    if cuda:
        return "fp16"
    good = set(faithful_modes(identity, table))
    for mode in CPU_SPEED_ORDER:
        if mode == "fp32" or (mode in good and mode in available):
            if mode == "fp32" and not good & available:
                log.info("precision auto: no faster mode is measured as faithful for %s %s on "
                         "this machine; using fp32 (bench/bench_fidelity.py qualifies a model)",
                         identity.name, identity.pretrained)
            return mode
    return "fp32"  # pragma: no cover - fp32 ends CPU_SPEED_ORDER
