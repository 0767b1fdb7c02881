"""Configs hold every default once; the API takes a config plus overrides; one device policy; no hidden seeding."""
import dataclasses
import importlib
import inspect
import pkgutil

import pytest
import torch

import neuroinspect
from neuroinspect.cli import build_parser
from neuroinspect.core.base.config import ExtractConfig, InspectorConfig, configured
from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.runtime.device import DevicePolicy
from neuroinspect.find.config import ExplainConfig
from neuroinspect.fix.config import EditConfig, FixConfig
from neuroinspect.show.config import RenderConfig

MAX_PARAMS = 8  # besides a config and a device policy (and **overrides of the config's fields)
SKIP = ("neuroinspect.cli",)  # the command line: argparse options, checked against the configs below
EXCEPTIONS: dict[str, int] = {}  # none: a function with more to say takes a config or a small record


def _public_callables():
    for info in pkgutil.walk_packages(neuroinspect.__path__, "neuroinspect."):
        if info.name.startswith(SKIP):
            continue
        mod = importlib.import_module(info.name)
        for name, obj in vars(mod).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
                continue
            if inspect.isfunction(obj):
                yield f"{mod.__name__}.{name}", obj
            elif inspect.isclass(obj) and not dataclasses.is_dataclass(obj):  # a dataclass's __init__ is its record
                for attr, fn in vars(obj).items():
                    if inspect.isfunction(fn) and (attr == "__init__" or not attr.startswith("_")):
                        yield f"{mod.__name__}.{name}.{attr}", fn


def _count(fn) -> int:
    skip = {"self", "cls", "config", "policy"}
    return sum(1 for p in inspect.signature(fn).parameters.values()
               if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in skip)


def test_no_public_function_takes_more_than_eight_parameters_besides_a_config():
    seen, over = set(), []
    for name, fn in _public_callables():
        seen.add(name)
        n = _count(fn)
        if n > EXCEPTIONS.get(name, MAX_PARAMS):
            over.append(f"{name}: {n}")
    assert not over, "put these options in a config dataclass:\n" + "\n".join(over)
    assert "neuroinspect.show.visualize.visualize_neurons" in seen and "neuroinspect.session.Inspector.__init__" in seen
    assert "neuroinspect.pipeline.run_pipeline" in seen and "neuroinspect.demo.run_demo" in seen
    assert set(EXCEPTIONS) <= seen, "an exception names a function that no longer exists: drop it"


def test_the_checker_counts_what_it_should():
    def long(a, b, c, d, e, f, g, h, i, config=None, *, policy=None, **overrides):
        pass

    assert _count(long) == 9


def test_an_unknown_override_is_one_clear_error_listing_the_valid_names():
    with pytest.raises(NeuroInspectError, match=r"unknown RenderConfig setting\(s\) 'stepz'; valid ones: recipe, "):
        configured(RenderConfig, None, {"stepz": 3})
    from neuroinspect.fix.edit import edit_head
    from neuroinspect.show.render import render

    with pytest.raises(NeuroInspectError, match="'lamda'.*valid ones:.*lam"):
        edit_head(torch.zeros(2, 3), None, None, None, {0: [1]}, lamda=0.1)
    with pytest.raises(NeuroInspectError, match="'device'"):  # where it runs is the policy's, not the config's
        render(None, None, [(0, 0)], device="cpu")
    assert configured(ExplainConfig, ExplainConfig(k=3), {"ranking": "additive"}) == ExplainConfig(k=3, ranking="additive")
    with pytest.raises(NeuroInspectError, match="must be a ExplainConfig|must be an? ExplainConfig"):
        configured(ExplainConfig, RenderConfig(), {})


def test_one_config_per_job_and_no_default_twice():
    # a fix's settings extend the trainer's: the shared ones are declared once, in EditConfig
    own = {f.name for f in dataclasses.fields(FixConfig)} - {f.name for f in dataclasses.fields(EditConfig)}
    assert own == {"fit_on", "quantile", "l2"}
    trainer = FixConfig(epochs=3, seed=4).edit_config(lr=0.1, lam=0.5)
    assert isinstance(trainer, EditConfig) and (trainer.epochs, trainer.seed, trainer.lr, trainer.lam) == (3, 4, 0.1, 0.5)
    assert InspectorConfig(batch_size=7).extract_config() == ExtractConfig(batch_size=7)


def _defaults(argv):
    parser = build_parser()
    return parser.parse_args(argv)


def _check(args, config, mapping):
    wrong = {opt: (getattr(args, opt), getattr(config, field)) for opt, field in mapping.items()
             if getattr(args, opt) != getattr(config, field)}
    assert not wrong, f"argparse default != config default (option: (argparse, config)): {wrong}"


COMMON = {"device": "device", "precision": "precision", "seed": "seed", "batch_size": "batch_size",
          "workers": "workers", "chunk_size": "chunk_size", "chunk_seconds": "chunk_seconds"}


def test_every_command_line_default_is_the_config_default():
    from neuroinspect.cli.common import inspector_config
    from neuroinspect.cli.edit import fix_config

    vis = _defaults(["visualize", "--model", "m", "--neurons", "1", "--out", "o"])
    _check(vis, RenderConfig(), {k: k for k in ("top_classes", "recipe", "clip", "steps", "size", "batch", "lr",
                                                "gamma", "epsilon", "param", "exemplars", "heatmaps", "start",
                                                "warmup", "split", "input_size")})
    _check(vis, InspectorConfig(), {k: v for k, v in COMMON.items() if hasattr(vis, k)})

    exp = _defaults(["explain", "--model", "m", "--data", "d", "--class", "a", "--out", "o"])
    _check(exp, ExplainConfig(), {"ranking": "ranking", "top_k": "k", "min_ratio": "min_ratio", "lambda1": "lambda1",
                                  "lambda2": "lambda2", "lr": "lr", "momentum": "momentum", "max_steps": "max_steps",
                                  "only_flipped": "only_flipped"})
    _check(exp, RenderConfig(), {"steps": "steps"})
    _check(exp, InspectorConfig(), COMMON)
    assert inspector_config(exp) == InspectorConfig(cache_dir=None)

    for argv in (["edit", "--model", "m", "--data", "d", "--class", "a", "--out", "o"],
                 ["compare", "--model", "m", "--data", "d", "--class", "a", "--out", "o"]):
        args = _defaults(argv)
        _check(args, InspectorConfig(), COMMON)
        assert fix_config(args, method=FixConfig.method) == FixConfig()  # every option left alone is the config's


def test_device_policy_resolves_auto_once():
    cpu = DevicePolicy.resolve("cpu", "auto")
    assert (cpu.device.type, cpu.precision, cpu.autocasts, cpu.cache_tag) == ("cpu", "fp32", False, "float32")
    assert DevicePolicy.resolve("auto", None).device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert DevicePolicy.of("cpu") == DevicePolicy() and DevicePolicy.of(cpu) is cpu
    with pytest.raises(NeuroInspectError, match="unknown precision 'fp8'"):
        DevicePolicy(torch.device("cpu"), "fp8")
    if not torch.cuda.is_available():
        with pytest.raises(NeuroInspectError, match="no CUDA GPU"):
            DevicePolicy.resolve("cuda")


def test_device_policy_autocast_place_and_fp16_backward():
    bf16 = DevicePolicy(torch.device("cpu"), "bf16", channels_last=True)
    a = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    with bf16.autocast():
        assert (a @ a).dtype == torch.bfloat16
    with DevicePolicy().autocast():
        assert (a @ a).dtype == torch.float32
    conv = torch.nn.Conv2d(3, 4, 3)
    assert bf16.place(conv) is conv and conv.weight.is_contiguous(memory_format=torch.channels_last)
    bf16.release(conv)
    assert conv.weight.is_contiguous()
    x = bf16.place(torch.zeros(1, 3, 5, 5))
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert bf16.for_backward() is bf16 and bf16.cache_tag == "autocast-bf16-cpu"
    with pytest.raises(NeuroInspectError, match="fp16 gradients need loss scaling"):
        DevicePolicy(torch.device("cpu"), "fp16").for_backward()


TINY_RANDOM = """
import torch
from torch import nn
from neuroinspect.core.model.models import Preprocess


class Net(nn.Module):  # random weights: drawn from whatever generator state there is
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)
        self.neuroinspect_preprocess = Preprocess(16, 16, (0.5,) * 3, (0.25,) * 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def make():
    return Net()
"""


def test_no_hidden_global_seeding(tmp_path, monkeypatch):
    """Building an Inspector or editing a head leaves the global generators alone, and stays reproducible."""
    from neuroinspect.core.model.featureset import FeatureSet
    from neuroinspect.fix.edit import edit_head
    from neuroinspect.session import Inspector

    (tmp_path / "tiny_random.py").write_text(TINY_RANDOM)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = Inspector("tiny_random:make", seed=5, cache_dir=tmp_path, progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    b = Inspector("tiny_random:make", seed=5, cache_dir=tmp_path, progress=False)
    c = Inspector("tiny_random:make", seed=6, cache_dir=tmp_path, progress=False)
    assert torch.equal(a.probe.weight, b.probe.weight) and not torch.equal(a.probe.weight, c.probe.weight)

    g = torch.Generator().manual_seed(0)
    n, D, C = 60, 6, 3
    labels = torch.arange(n) % C
    z = torch.randn(n, D, generator=g) + torch.nn.functional.one_hot(labels, D)[:, :D].float() * 2
    fs = FeatureSet(z, torch.zeros(n, C), labels, torch.full((n,), -1), [str(i) for i in range(n)],
                    ["a", "b", "c"], [], "train", [])
    W, bias = torch.randn(C, D, generator=g), torch.zeros(C)
    before = torch.get_rng_state()
    r1 = edit_head(W, bias, fs, None, {0: [1]}, EditConfig(epochs=2, patience=None, batch_size=16, seed=3))
    assert torch.equal(torch.get_rng_state(), before)
    r2 = edit_head(W, bias, fs, None, {0: [1]}, epochs=2, patience=None, batch_size=16, seed=3)
    assert torch.equal(r1.weight, r2.weight)


def test_split_policy_reads_flat_settings():
    from neuroinspect.core.runtime.device import split_policy

    policy, rest = split_policy({"precision": "bf16", "channels_last": True, "steps": 3}, "cpu")
    assert policy == DevicePolicy(torch.device("cpu"), "bf16", True) and rest == {"steps": 3}
    assert split_policy({"amp": True})[0].precision == "bf16" and split_policy({})[0] == DevicePolicy()
    with pytest.raises(NeuroInspectError, match="fp16 gradients"):
        split_policy({"precision": "fp16"})
