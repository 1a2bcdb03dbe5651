"""One short run on a CUDA machine: is the GPU path fast and faithful?

Measures, in a few minutes:

1. image-encoding throughput on CUDA: the bare model (``encode_image`` in fp16
   autocast on preprocessed tensors already on the GPU) and clipsearch's encoder in
   ``CLIPSEARCH_PRECISION=fp16`` (uint8 pixels from the host, normalisation, forward,
   normalised float32 vectors back), the ratio of the two; fp32 on CUDA too;
2. cosine of the CUDA fp16 vectors (images and texts) to CPU fp32 vectors of the same
   inputs: min and mean, and top-10 agreement of text->image searches;
3. if faiss-gpu is importable (``faiss.get_num_gpus() > 0``): flat and IVF search on the
   GPU against the same search on the CPU: top-10 agreement and speed.

Self-checking: each measured figure is compared with a limit (cosine >= 0.99,
agreement >= 0.95, fp16 throughput >= 0.9x the bare model) and the script exits 1 when
one is missed. Exit codes: 0 all checks passed, 1 a check failed, 3 no CUDA device
(nothing measured; says so). Model: ViT-B-32 with random weights unless ``--model`` /
``--pretrained`` name cached weights.

    python bench/gpu_check.py            # ~2-4 minutes on one GPU
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

NO_CUDA = 3


def _throughput(fn, batches: int, n: int, sync) -> float:
    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(batches):
        fn()
    sync()
    return batches * n / (time.perf_counter() - t0)


def _agreement(q_ref, items_ref, q, items, k=10) -> float:
    a = np.argsort(-(q_ref @ items_ref.T), axis=1)[:, :k]
    b = np.argsort(-(q @ items.T), axis=1)[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b)]))


def faiss_check(dim: int, checks: list) -> None:
    try:
        import faiss
    except ImportError:
        print("faiss: not importable; GPU search not checked")
        return
    ngpu = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if ngpu < 1:
        print("faiss: no GPU support in this build (faiss-cpu); GPU search not checked")
        return
    rng = np.random.default_rng(0)
    xb = rng.normal(size=(200_000, dim)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xq = xb[rng.choice(len(xb), 1000, replace=False)] + 0.05 * rng.normal(size=(1000, dim)).astype(np.float32)
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    res = faiss.StandardGpuResources()
    for name, factory in (("flat", "Flat"), ("ivf1024", "IVF1024,Flat")):
        cpu = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        cpu.train(xb[:50_000])
        cpu.add(xb)
        if hasattr(cpu, "nprobe"):
            cpu.nprobe = 32
        gpu = faiss.index_cpu_to_gpu(res, 0, cpu)
        t0 = time.perf_counter()
        _, ic = cpu.search(xq, 10)
        tc = time.perf_counter() - t0
        gpu.search(xq[:10], 10)
        t0 = time.perf_counter()
        _, ig = gpu.search(xq, 10)
        tg = time.perf_counter() - t0
        agree = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ic, ig)]))
        print(f"faiss {name}: top-10 agreement GPU vs CPU {agree:.4f}; 1000 queries CPU "
              f"{tc * 1000:.0f} ms, GPU {tg * 1000:.0f} ms (x{tc / max(tg, 1e-9):.1f})")
        checks.append((f"faiss {name} GPU/CPU agreement >= 0.99", agree >= 0.99))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--pretrained", default="none")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--batches", type=int, default=20)
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device is present (torch.cuda.is_available() is False); "
              "nothing was measured. Run it on a machine with an NVIDIA GPU and CUDA torch.")
        return NO_CUDA
    from search.encoder import build_encoder
    from search.encoder.calibration import images as sample_images
    from search.encoder.calibration import texts as sample_texts

    name = torch.cuda.get_device_name(0)
    print(f"device: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    checks: list[tuple[str, bool]] = []
    gpu16 = build_encoder(args.model, args.pretrained, precision="fp16", device="cuda")
    gpu32 = build_encoder(args.model, args.pretrained, precision="fp32", device="cuda")
    cpu = build_encoder(args.model, args.pretrained, precision="fp32", device="cpu")
    size = gpu16.preprocess.size
    pix = sample_images(size, n=args.batch_size)
    sync = torch.cuda.synchronize

    x = gpu16.normalise(pix)

    def bare():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
            gpu16.model.encode_image(x)

    bare_rate = _throughput(bare, args.batches, len(pix), sync)
    ours16 = _throughput(lambda: gpu16.encode_pixels(pix), args.batches, len(pix), sync)
    ours32 = _throughput(lambda: gpu32.encode_pixels(pix), max(2, args.batches // 2), len(pix),
                         sync)
    print(f"images/s, batch {len(pix)}: bare model fp16 {bare_rate:.0f}, clipsearch fp16 "
          f"{ours16:.0f} (x{ours16 / bare_rate:.2f} of bare), clipsearch fp32 on CUDA {ours32:.0f}")
    checks.append(("fp16 encoder >= 0.9x the bare fp16 model", ours16 >= 0.9 * bare_rate))
    texts = sample_texts(128)
    img_cpu, txt_cpu = cpu.encode_pixels(pix[:64]), cpu.encode_texts(texts)
    img_gpu, txt_gpu = gpu16.encode_pixels(pix[:64]), gpu16.encode_texts(texts)
    ci = np.sum(img_cpu * img_gpu, axis=1)
    ct = np.sum(txt_cpu * txt_gpu, axis=1)
    agree = _agreement(txt_cpu, img_cpu, txt_gpu, img_gpu)
    print(f"CUDA fp16 vs CPU fp32 cosine: images min {ci.min():.5f} mean {ci.mean():.5f}; "
          f"texts min {ct.min():.5f} mean {ct.mean():.5f}; text->image top-10 agreement "
          f"{agree:.4f}")
    checks.append(("image cosine CUDA fp16 / CPU fp32 >= 0.99", ci.min() >= 0.99))
    checks.append(("text cosine CUDA fp16 / CPU fp32 >= 0.99", ct.min() >= 0.99))
    checks.append(("text->image top-10 agreement >= 0.95", agree >= 0.95))
    faiss_check(gpu16.dim, checks)
    failed = [c for c, ok in checks if not ok]
    for c, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {c}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
