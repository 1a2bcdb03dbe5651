"""CPU forward candidates side by side: eager PyTorch, torch's own options, ONNX Runtime, OpenVINO.

Image tower of ViT-B-32 (random weights: the compute of the real model), batch 16,
preprocessed inputs; every candidate built from open_clip's own model (ONNX export
with ``torch.onnx.export``, OpenVINO from the ONNX file), measured in alternation,
best of ``--rounds`` (the machine is shared: the best round is the least disturbed).
Cosine to the eager fp32 output is printed next to each.

Candidates: eager fp32; eager with ``torch.jit.freeze`` + oneDNN fusion
(``torch.jit.optimize_for_inference``); ``torch.compile`` (``--compile``: minutes to
compile on 2 cores); ``torch.ao`` dynamic int8 of the Linear layers; ONNX Runtime fp32
(all graph optimisations); ONNX Runtime int8 static QDQ, per-channel weights, calibrated;
OpenVINO fp32, bf16, and the ORT-calibrated QDQ model; OpenVINO + NNCF int8 (the
``int8`` mode clipsearch keeps).

    python bench/bench_runtimes.py --threads 1 --rounds 3
    python bench/bench_runtimes.py --threads 2 --rounds 3
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "bench-runtimes"))
    ap.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "clipsearch-ov-cache"),
                    help="converted OpenVINO models (shared with the other benchmarks)")
    args = ap.parse_args()
    import onnxruntime as ort
    import openvino as ov
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, \
        quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from search.encoder import build_encoder
    from search.encoder.calibration import images

    torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)
    fp32 = build_encoder("ViT-B-32", "none", precision="fp32")
    net = fp32.model
    calib = fp32.normalise(images(224, 32)).numpy()
    x = fp32.normalise(images(224, args.batch + 32)[32:]).numpy()

    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, t):
            return self.net.encode_image(t)

    tower = Tower().eval()
    onnx_path = os.path.join(args.work, "vitb32-image.onnx")
    q_path = os.path.join(args.work, "vitb32-image-qdq.onnx")
    if not os.path.exists(onnx_path):
        torch.onnx.export(tower, (torch.from_numpy(x[:2]),), onnx_path, input_names=["pixels"],
                          output_names=["emb"], dynamic_axes={"pixels": {0: "n"}, "emb": {0: "n"}},
                          opset_version=17, dynamo=False)
    if not os.path.exists(q_path):
        pre = os.path.join(args.work, "vitb32-image-pre.onnx")
        quant_pre_process(onnx_path, pre, skip_symbolic_shape=True)

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter([{"pixels": calib[i:i + 8]} for i in range(0, len(calib), 8)])

            def get_next(self):
                return next(self.it, None)

        quantize_static(pre, q_path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["MatMul", "Conv", "Gemm"])
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    s32 = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    s8 = ort.InferenceSession(q_path, so, providers=["CPUExecutionProvider"])
    core = ov.Core()

    def ov_req(path_or_model, hint):
        model = core.read_model(path_or_model) if isinstance(path_or_model, str) else path_or_model
        return core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                 "INFERENCE_NUM_THREADS": args.threads,
                                                 "PERFORMANCE_HINT": "LATENCY"}
                                  ).create_infer_request()

    o32, obf, oqdq = ov_req(onnx_path, "f32"), ov_req(onnx_path, "bf16"), ov_req(q_path, "f32")
    nncf_enc = build_encoder("ViT-B-32", "none", precision="int8", threads=args.threads,
                             cache_dir=args.cache_dir)
    pix = images(224, args.batch + 32)[32:]
    with torch.inference_mode():
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(
            tower, torch.from_numpy(x[:2]))))
        dyn = torch.ao.quantization.quantize_dynamic(tower, {torch.nn.Linear}, dtype=torch.qint8)
    cands = {
        "torch eager fp32": lambda a: tower(torch.from_numpy(a)).numpy(),
        "torch jit.freeze + oneDNN fusion": lambda a: frozen(torch.from_numpy(a)).numpy(),
        "torch dynamic int8 (Linear)": lambda a: dyn(torch.from_numpy(a)).numpy(),
        "ONNX Runtime fp32": lambda a: s32.run(None, {"pixels": a})[0],
        "ONNX Runtime int8 static QDQ": lambda a: s8.run(None, {"pixels": a})[0],
        "OpenVINO fp32": lambda a: o32.infer({0: a})[0].copy(),
        "OpenVINO bf16 (clipsearch bf16)": lambda a: obf.infer({0: a})[0].copy(),
        "OpenVINO running the ORT QDQ int8": lambda a: oqdq.infer({0: a})[0].copy(),
        "OpenVINO + NNCF int8 (clipsearch int8)": None,
    }
    if args.compile:
        compiled = torch.compile(tower)
        cands["torch.compile fp32"] = lambda a: compiled(torch.from_numpy(a)).numpy()
    best = dict.fromkeys(cands, 0.0)
    outs = {}
    with torch.inference_mode():
        for k, f in cands.items():
            outs[k] = nncf_enc.encode_pixels(pix) if f is None else f(x)
        for _ in range(args.rounds):
            for k, f in cands.items():
                t0 = time.perf_counter()
                _ = nncf_enc.encode_pixels(pix) if f is None else f(x)
                best[k] = max(best[k], len(x) / (time.perf_counter() - t0))
    ref = outs["torch eager fp32"]
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    print(f"ViT-B-32 image tower, batch {len(x)}, {args.threads} thread(s), best of "
          f"{args.rounds}, load {os.getloadavg()[0]:.1f}")
    print("| candidate | images/s | vs eager fp32 | min cosine to fp32 |\n|---|---|---|---|")
    for k in cands:
        o = outs[k] / np.linalg.norm(outs[k], axis=1, keepdims=True)
        print(f"| {k} | {best[k]:.1f} | x{best[k] / best['torch eager fp32']:.2f} | "
              f"{np.sum(o * ref, axis=1).min():.5f} |")


if __name__ == "__main__":
    main()
