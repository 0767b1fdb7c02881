"""The GPU path, measured in one command: extraction, rendering and the paper's CLIP-Illusion recipe.

Prints one JSON object (and writes it with ``--json``):

``extraction``  images/s of the project's extraction (``extract_features``: the DataLoader with
                ``--workers`` workers and pinned memory on CUDA) for EfficientNet-Lite0 and a randomly
                initialised ResNet-50 at 224 px, in fp32, with bf16/fp16 autocast (``amp``; CUDA only),
                + channels_last, + ``torch.compile`` (``--compile``, on by default on CUDA); and the
                model alone on images already on the device (the bound without data loading).
``render``      image-steps/s of ``render`` (Lite0, the class recipe, 224 px) at batch 1, 8 and 32,
                and the batch that fits the device's memory (``memory_batch``).
``clip_illusion`` seconds per image of the paper's recipe (Sec. III-D, Table V): a ResNet-50
                classifier with a randomly initialised OpenCLIP ViT-B-32 as guide, 650 steps, 224 px,
                at batch 1 and at the memory-sized batch.

Random weights: the cost does not depend on them (Lite0 uses its packaged weights, no download).
On CUDA the mixed precision is bf16 where supported (else fp16) and channels_last is on for
rendering. ``--tiny`` shrinks everything (images, sizes, steps) so that ``--device cpu --tiny``
checks the script in a minute or two; its numbers mean nothing.

    python benchmarks/gpu.py                          # on a CUDA machine, about 3-5 minutes
    python benchmarks/gpu.py --device cpu --tiny      # the smoke run
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

from neuroinspect.core.runtime.device import DevicePolicy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Clock, add_arguments, emit, environment, measure, pin_threads, write_images  # noqa: E402


def _mixed(device: torch.device) -> str:
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def extraction(args, device: torch.device, root: Path) -> dict:
    from neuroinspect.core.data.load import load_data
    from neuroinspect.core.model.features import extract_features
    from neuroinspect.core.model.models import build_model
    from neuroinspect.core.model.probe import Probe

    data = load_data(root)
    n = data.size("all")
    out = {"images": n, "batch_size": args.batch_size, "workers": args.workers, "input_size": args.size,
           "pinned_memory": device.type == "cuda", "autocast": _mixed(device) if device.type == "cuda" else "none (CUDA only)"}
    for name, spec in (("efficientnet_lite0", "efficientnet-lite0"), ("resnet50", "torchvision:resnet50")):
        loaded = build_model(spec, input_size=args.size)
        model = loaded.model.to(device).eval()
        probe = Probe(model, input_size=args.size)
        rows = {}

        def run(amp: bool, cl: bool) -> None:
            policy = DevicePolicy(device, _mixed(device) if amp else "fp32", cl)
            extract_features(loaded, probe, data, "all", policy=policy, batch_size=args.batch_size,
                             workers=args.workers, progress=False)

        variants = [("fp32", False, False, False), ("amp", True, False, False), ("amp+channels_last", True, True, False)]
        if args.compile:
            variants.append(("amp+channels_last+compile", True, True, True))
        for label, amp, cl, comp in variants:
            model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
            try:
                if comp:
                    model.compile()
                t, _ = measure(lambda: run(amp, cl), repeat=args.repeat, warmup=1)
                rows[label] = {"images_per_s": round(n / t["wall_s_min"], 1), "times": t}
            except Exception as err:  # a compiler missing or failing: say so, keep the other numbers
                rows[label] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
        # the model alone, on a batch already on the device (best settings above): the bound without the loader
        x = torch.randn(args.batch_size, 3, args.size, args.size, device=device)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)

        def bare():
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16 if _mixed(device) == "bf16"
                                                        else torch.float16, enabled=device.type == "cuda"):
                for _ in range(args.model_batches):
                    model(x)

        t, _ = measure(bare, repeat=args.repeat, warmup=1)
        rows["model_only"] = {"images_per_s": round(args.model_batches * args.batch_size / t["wall_s_min"], 1), "times": t}
        out[name] = rows
        print(f"extraction {name}: " + ", ".join(f"{k} {v.get('images_per_s', 'error')}" for k, v in rows.items()),
              file=sys.stderr)
        del model, probe, loaded
    return out


def rendering(args, device: torch.device) -> dict:
    from neuroinspect.core.model.models import build_model
    from neuroinspect.core.model.probe import Probe
    from neuroinspect.show.render import memory_batch, render

    loaded = build_model("efficientnet-lite0", input_size=args.size)
    loaded.model.to(device)
    probe = Probe(loaded.model, input_size=args.size)
    precision = _mixed(device)
    cl = device.type == "cuda"
    policy = DevicePolicy(device, precision, cl)
    common = dict(recipe="class", size=args.size, input_size=args.size, policy=policy, progress=False)
    auto = memory_batch(probe, loaded.preprocess, policy, size=args.size, limit=256)
    pairs = [(k % probe.D, k % probe.C) for k in range(max(args.batches + [auto if device.type == "cuda" else 0]))]
    render(probe, loaded.preprocess, pairs[:1], steps=2, **common)  # warm-up
    rows = []
    for b in args.batches + ([auto] if device.type == "cuda" and auto not in args.batches else []):
        t, _ = measure(lambda: render(probe, loaded.preprocess, pairs[:b], steps=args.render_steps, batch=b, **common),
                       repeat=args.repeat)
        rows.append({"batch": b, "memory_sized": b == auto and device.type == "cuda",
                     "image_steps_per_s": round(b * args.render_steps / t["wall_s_min"], 2), "times": t})
        print(f"render batch {b}: {rows[-1]['image_steps_per_s']} image-steps/s", file=sys.stderr)
    one = rows[0]["image_steps_per_s"]
    for r in rows:
        r["speedup_vs_batch_1"] = round(r["image_steps_per_s"] / one, 2)
    return {"model": "efficientnet-lite0", "recipe": "class", "size": args.size, "steps": args.render_steps,
            "precision": precision, "channels_last": cl, "memory_batch": auto if device.type == "cuda" else None,
            "batches": rows}


def random_clip(device: torch.device):
    """An OpenCLIP ViT-B-32 with random weights (no download), wrapped as the project's ClipModel."""
    import open_clip

    from neuroinspect.show.augment import ModelInput
    from neuroinspect.show.clip import OPENAI_MEAN, OPENAI_STD, ClipModel

    model = open_clip.create_model("ViT-B-32", pretrained=None, device=device)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    return ClipModel("open_clip:ViT-B-32 (random init)", model, model.encode_image, model.encode_text, tokenizer,
                     ModelInput(224, OPENAI_MEAN, OPENAI_STD), device, templates=["a photo of a {}."])


def clip_illusion(args, device: torch.device) -> dict:
    from neuroinspect.core.model.models import build_model
    from neuroinspect.core.model.probe import Probe
    from neuroinspect.show.render import memory_batch, render

    loaded = build_model("torchvision:resnet50", input_size=args.size)
    loaded.model.to(device)
    probe = Probe(loaded.model, input_size=args.size)
    clip = random_clip(device)
    texts = [f"class {c}" for c in range(probe.C)]
    precision = _mixed(device)
    cl = device.type == "cuda"
    policy = DevicePolicy(device, precision, cl)
    common = dict(recipe="clip-illusion", clip=clip, class_texts=texts, size=args.size, input_size=args.size,
                  policy=policy, progress=False)
    auto = memory_batch(probe, loaded.preprocess, policy, size=args.size, clip=clip,
                        limit=args.clip_images) if device.type == "cuda" else min(args.clip_images, 2)
    pairs = [(k % probe.D, k % probe.C) for k in range(max(auto, 1))]
    render(probe, loaded.preprocess, pairs[:1], steps=2, **common)  # warm-up (and the class embeddings)
    rows = []
    for b in sorted({1, auto}):
        with Clock() as t:
            render(probe, loaded.preprocess, pairs[:b], steps=args.clip_steps, batch=b, **common)
        rows.append({"batch": b, "images": b, "seconds_per_image": round(t.wall / b, 3), **t.as_dict()})
        print(f"clip-illusion batch {b}: {rows[-1]['seconds_per_image']} s/image", file=sys.stderr)
    return {"classifier": "torchvision resnet50 (random init)", "guide": clip.spec, "steps": args.clip_steps,
            "size": args.size, "precision": precision, "channels_last": cl, "runs": rows,
            "paper": "Table V: 26.5 s per image on an RTX A6000"}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes and steps: checks that the script runs (CPU smoke test)")
    ap.add_argument("--images", type=int, help="images for the extraction (default 1024; 16 with --tiny)")
    ap.add_argument("--batch-size", type=int, help="extraction batch (default 128; 8 with --tiny)")
    ap.add_argument("--workers", type=int, help="DataLoader workers (default min(8, cores) on CUDA, 0 on CPU)")
    ap.add_argument("--compile", choices=["on", "off", "auto"], default="auto",
                    help="also time torch.compile in extraction (auto: on for CUDA)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: extraction,render,clip_illusion")
    ap.add_argument("--json", help="also write the results to this file")
    add_arguments(ap, threads=0, repeat=2)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but no CUDA device is visible; pass --device cpu (with --tiny for a quick check)")
    cores = os.cpu_count() or 1
    pin_threads(args.threads or (min(8, cores) if device.type == "cuda" else 1))
    tiny = args.tiny
    args.size = 64 if tiny else 224
    args.images = args.images or (16 if tiny else 1024)
    args.batch_size = args.batch_size or (8 if tiny else 128)
    args.workers = args.workers if args.workers is not None else (min(8, cores) if device.type == "cuda" else 0)
    args.compile = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    args.model_batches = 2 if tiny else 8
    args.batches = [1, 8, 32] if not tiny else [1, 8]
    args.render_steps = 2 if tiny else 20
    args.clip_steps = 2 if tiny else 650
    args.clip_images = 2 if tiny else 64
    if tiny:
        args.repeat = 1
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    report = {"benchmark": "gpu", "tiny": tiny, **environment(str(device))}
    with Clock() as total:
        if "extraction" not in skip:
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp) / "images"
                write_images(root, args.images, args.size + args.size // 7)
                report["extraction"] = extraction(args, device, root)
        if "render" not in skip:
            report["render"] = rendering(args, device)
        if "clip_illusion" not in skip:
            report["clip_illusion"] = clip_illusion(args, device)
    report["total"] = total.as_dict()
    emit(report, args.json)
    return report


if __name__ == "__main__":
    main()
