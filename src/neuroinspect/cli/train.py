"""``neuroinspect train``: the ERM classifier the other commands debug (paper appendix recipe)."""
from __future__ import annotations

from pathlib import Path

from neuroinspect.cli.common import add_data_args, add_run_args, write_run_json
from neuroinspect.core.model.sources import model_spec_help
from neuroinspect.train_config import OPTIMIZERS, SELECT_BY, TrainConfig

_T = TrainConfig()  # every default below is read from here (torch-free)


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train (fine-tune or linear-probe) the classifier to debug",
        description="Train a model spec on the data's train split, keeping the epoch with the best validation "
                    "metric. Defaults are the paper's recipe for its ResNet-50 classifiers (Adam, cosine annealing, "
                    f"lr {_T.lr:g}, batch {_T.batch_size}, {_T.epochs} epochs, best on val). --head-only trains just the decision layer on "
                    "cached features of the frozen backbone (the paper's MetaShift ResNet-18: add --batch 8). "
                    "Writes OUT/model.safetensors (reload with --model SPEC --weights OUT/model.safetensors "
                    "--num-classes C), OUT/train.json, OUT/run.json and a resumable OUT/checkpoint.pt: rerunning "
                    "the same command continues where it stopped.",
    )
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True, metavar="SPEC",
                   help=f"{model_spec_help()} (e.g. torchvision:resnet50/IMAGENET1K_V2 downloads its weights)")
    g.add_argument("--init-weights", metavar="FILE",
                   help="weights loaded before the head is resized to the data's classes (e.g. a local copy of "
                        "ImageNet weights for the architecture)")
    g.add_argument("--head", metavar="MODULE", help="name of the decision layer (nn.Linear) if it cannot be found automatically")
    g.add_argument("--allow-pickle", action="store_true", help="allow checkpoints that hold pickled objects (only for files you trust)")
    add_data_args(p)
    t = p.add_argument_group("training")
    t.add_argument("--head-only", action="store_true",
                   help="freeze the backbone and train only the decision layer on cached features (linear probe)")
    t.add_argument("--epochs", type=int, default=_T.epochs, help=f"epochs (default {_T.epochs})")
    t.add_argument("--lr", type=float, default=_T.lr,
                   help=f"initial learning rate, cosine-annealed to 0 (default {_T.lr:g})")
    t.add_argument("--batch", type=int, default=_T.batch_size, help=f"training batch size (default {_T.batch_size})")
    t.add_argument("--optimizer", default=_T.optimizer, choices=OPTIMIZERS,
                   help=f"adam or sgd with momentum 0.9 (default {_T.optimizer})")
    t.add_argument("--weight-decay", type=float, default=_T.weight_decay, help=f"weight decay (default {_T.weight_decay:g})")
    t.add_argument("--no-augment", action="store_true", help="fine-tuning without random resized crops and flips")
    t.add_argument("--select-by", default=_T.select_by, choices=SELECT_BY,
                   help=f"validation metric that picks the kept epoch (default {_T.select_by})")
    t.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast on CUDA")
    t.add_argument("--restart", action="store_true", help="ignore (and replace) a checkpoint already in --out")
    add_run_args(p, precision=False)  # training has --no-amp
    p.set_defaults(func=run)


def run(args) -> int:
    from neuroinspect.train import CHECKPOINT, MODEL_FILE, train_classifier

    out = Path(args.out)
    config = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch, optimizer=args.optimizer,
                         weight_decay=args.weight_decay, head_only=args.head_only, augment=not args.no_augment,
                         select_by=args.select_by, seed=args.seed, amp=not args.no_amp)
    config.check()
    if args.restart:
        (out / CHECKPOINT).unlink(missing_ok=True)

    def show(r: dict) -> None:
        val = "" if r.get("val_acc") is None else f"  val acc {100 * r['val_acc']:.2f}%"
        if r.get("val_worst_group") is not None:
            val += f"  val worst group {100 * r['val_worst_group']:.2f}%"
        print(f"epoch {r['epoch']:>3}/{config.epochs}  loss {r['train_loss']:.4f}  train acc {100 * r['train_acc']:.2f}%"
              f"{val}  ({r['seconds']:.1f} s)", flush=True)

    try:
        result = train_classifier(
            args.model, args.data, out, config, init_weights=args.init_weights, head=args.head, device=args.device,
            cache_dir=args.cache_dir, workers=args.workers, batch_size=args.batch_size,
            allow_pickle=args.allow_pickle, download=args.download, resume=not args.restart,
            progress=not args.no_progress, on_epoch=show,
        )
    except KeyboardInterrupt:
        if (out / CHECKPOINT).is_file():
            print(f"interrupted: {out / CHECKPOINT} holds the last finished epoch; rerun the same command "
                  "(without --restart) to resume", flush=True)
        raise
    write_run_json(out, args, model=args.model, data=args.data)
    if result.resumed_from:
        print(f"resumed after epoch {result.resumed_from}")
    for split, m in (("val", result.val_metrics), ("test", result.test_metrics)):
        if m:
            extra = "" if m.worst_group_acc is None else f", worst group {100 * m.worst_group_acc:.2f}%"
            print(f"best epoch {result.best_epoch} on {split}: accuracy {100 * m.accuracy:.2f}%, worst class "
                  f"{100 * m.worst_class_acc:.2f}%{extra}")
    r = result.reload
    print(f"\nweights in {out / MODEL_FILE}; use them with: --model {r['model']} --weights {out / MODEL_FILE} "
          f"--num-classes {r['num_classes']}")
    return 0
