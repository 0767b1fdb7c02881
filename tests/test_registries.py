"""The registries (model sources, recipes, fix methods): a new entry is one decorated function and works
end to end, from the command line too (which reads only the registries' torch-free name tables);
unknown names fail in one line that lists the choices."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import shortcut
from neuroinspect.cli import main
from neuroinspect.core.model import models as M
from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.model.probe import Probe
from neuroinspect.fix.compare import fix_head, run_methods
from neuroinspect.fix.edit import GradientMethod
from neuroinspect.fix.methods import FIX_METHODS, FixMethod, FixProblem, FixResult, fix_method, get_fix_method
from neuroinspect.show import objectives as O
from planted import write_folder


class _Tiny(nn.Module):
    def __init__(self, width: int, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))


@pytest.fixture
def test_source():
    @M.model_source("test", "test:WIDTH")
    def _build(rest: str, num_classes: int | None) -> M.Built:
        model = _Tiny(int(rest), num_classes or 10)
        names = [f"c{i}" for i in range(num_classes or 10)]
        return M.Built(model, M.Preprocess(16, 16, (0.5,) * 3, (0.25,) * 3), names, "tiny factory")

    yield
    del M.MODEL_SOURCES["test"]


# --------------------------------------------------------------------------- model sources
def test_a_registered_model_source_builds_models_end_to_end(test_source, tmp_path):
    lm = M.build_model("test:6", num_classes=3)
    assert isinstance(lm.model, _Tiny) and lm.model.conv.out_channels == 6 and not lm.model.training
    assert lm.class_names == ["c0", "c1", "c2"] and lm.preprocess.input_size == 16
    assert lm.extra["factory_source"] == "tiny factory"
    probe = Probe(lm.model, input_size=16)
    assert (probe.head_name, probe.D, probe.C) == ("fc", 6, 3)
    # weights round-trip through the same spec
    torch.save(lm.model.state_dict(), tmp_path / "w.pt")
    again = M.build_model("test:6", weights=tmp_path / "w.pt", num_classes=3)
    assert again.fingerprint() == lm.fingerprint()


def test_unknown_model_spec_lists_every_registered_source(test_source):
    with pytest.raises(NeuroInspectError, match="not understood") as err:
        M.build_model("resnet18")
    text = str(err.value)
    assert "\n" not in text
    for usage in ("torchvision:NAME", "timm:NAME", "efficientnet-lite0", "hf:NAME_OR_DIR", "MODULE:CALLABLE", "test:WIDTH"):
        assert usage in text


def test_registered_prefixes_win_over_module_callable_and_exact_names_stay_exact():
    assert M.resolve_model_source("torchvision:resnet18/DEFAULT")[0].name == "torchvision"
    assert M.resolve_model_source("torchvision:resnet18/DEFAULT")[1] == "resnet18/DEFAULT"
    source, rest = M.resolve_model_source("efficientnet-lite0")
    assert (source.name, source.exact, rest) == ("efficientnet-lite0", True, "efficientnet-lite0")
    assert M.resolve_model_source("planted:planted_cnn")[0].name == M.CALLABLE_SOURCE
    with pytest.raises(NeuroInspectError, match="not understood"):
        M.resolve_model_source("efficientnet-lite7")


def test_timm_preprocessing_comes_from_its_pretrained_cfg_and_heads_use_reset_classifier():
    lm = M.build_model("timm:test_resnet")  # a tiny timm test network with a real pretrained_cfg
    cfg = lm.model.pretrained_cfg
    assert lm.preprocess.mean == tuple(cfg["mean"]) and lm.preprocess.std == tuple(cfg["std"])
    assert lm.preprocess.input_size == cfg["input_size"][-1]
    assert lm.preprocess.resize_size == round(cfg["input_size"][-1] / cfg["crop_pct"])
    assert lm.preprocess.interpolation == cfg["interpolation"]
    M.resize_head(lm.model, 5, input_size=64)
    assert lm.model.num_classes == 5  # timm's own bookkeeping: reset_classifier did it
    assert lm.model.get_classifier().out_features == 5
    assert lm.model(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_hf_image_classifier_from_a_local_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=64, num_labels=3,
                                 id2label={0: "cat", 1: "dog", 2: "fox"}, label2id={"cat": 0, "dog": 1, "fox": 2})
    torch.manual_seed(0)
    transformers.ViTForImageClassification(cfg).save_pretrained(tmp_path / "vit")
    lm = M.build_model(f"hf:{tmp_path / 'vit'}")
    assert lm.class_names == ["cat", "dog", "fox"]
    probe = Probe(lm.model, input_size=32)
    assert probe.head_name == "classifier" and probe.C == 3
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(probe(x).logits, lm.model(x).logits)
    resized = M.build_model(f"hf:{tmp_path / 'vit'}", num_classes=2)
    assert Probe(resized.model, input_size=32).C == 2 and resized.class_names is None
    with pytest.raises(NeuroInspectError, match="no config.json"):
        M.build_model(f"hf:{tmp_path / 'missing'}")


# --------------------------------------------------------------------------- recipes
def _ctx():
    g = torch.Generator().manual_seed(0)
    return O.Context(features=torch.rand(3, 5, generator=g), logits=torch.randn(3, 4, generator=g),
                     neurons=torch.tensor([0, 1, 2]), classes=torch.tensor([1, 2, 3]))


def test_a_registered_recipe_is_usable_by_name_and_alias():
    @O.register_recipe("logit-only", aliases=("lo",))
    def _logit_only(gamma, epsilon):
        return -O.ClassLogit()

    try:
        ctx = _ctx()
        expected = -ctx.logits.gather(1, ctx.classes.view(-1, 1)).squeeze(1)
        assert torch.allclose(O.recipe("logit-only")(ctx), expected)
        assert torch.allclose(O.recipe("lo")(ctx), expected)
        assert O.get_recipe("lo").name == "logit-only"
    finally:
        del O.RECIPES["logit-only"]
    assert "lo" not in O.RECIPES  # its alias went with it


def test_recipe_aliases_resolve_and_unknown_names_list_the_choices():
    assert O.get_recipe("clip").name == "clip-illusion" and O.get_recipe("clip").needs_clip
    ctx = _ctx()
    assert torch.allclose(O.recipe("fv")(ctx), -ctx.features.gather(1, ctx.neurons.view(-1, 1)).squeeze(1))
    assert not O.RECIPES.info("fv").per_class and O.RECIPES.info("clip-illusion").needs_clip
    with pytest.raises(NeuroInspectError, match="unknown recipe") as err:
        O.recipe("dream")
    assert "\n" not in str(err.value) and all(name in str(err.value) for name in ("clip-illusion", "class", "fv", "clip"))


def test_the_clip_alias_works_through_visualize_neurons(tmp_path):
    from neuroinspect.show.visualize import visualize_neurons

    lm = M.LoadedModel(_Tiny(4, 2).eval(), "tiny", M.Preprocess(16, 16, (0.0,) * 3, (1.0,) * 3), class_names=["a", "b"])
    rep = visualize_neurons(lm, [1], ["a"], tmp_path / "v", recipe="clip", clip="none", steps=2, size=16,
                            heatmaps=0, progress=False)
    assert rep.recipe_requested == "clip" and rep.recipe == "class" and rep.clip_fallback is False


# --------------------------------------------------------------------------- fix methods
@pytest.fixture(scope="module")
def case():
    S = shortcut.splits(0)
    W, b = shortcut.erm_head(S["train"], steps=100)
    return {k: v.with_logits(W, b) for k, v in S.items()}, W, b


def test_a_registered_fix_method_runs_through_fix_head_and_run_methods(case):
    F, W, b = case

    @fix_method("zero-cue-test", "zero the neurons' weights (test)", needs_neurons=True)
    def _zero(p: FixProblem, cfg) -> FixResult:
        weight = p.W.clone()
        for c, s in p.targets.items():
            weight[c, s] = 0.0
        return FixResult(weight, p.b, "zero-cue-test", p.targets, chosen={"seed": cfg.seed})

    try:
        res = fix_head(W, b, F["train"], F["val"], {shortcut.SPURIOUS: [shortcut.CUE]}, method="zero-cue-test", seed=3)
        assert res.weight[shortcut.SPURIOUS, shortcut.CUE] == 0 and res.chosen == {"seed": 3}
        assert torch.equal(res.weight[0], W[0])
        with pytest.raises(NeuroInspectError, match="needs neurons"):  # its flag is honoured
            fix_head(W, b, F["train"], F["val"], {shortcut.SPURIOUS: []}, method="zero-cue-test")
        out = run_methods(W, b, F, {shortcut.SPURIOUS: [shortcut.CUE]},
                          ["zero-cue-test", "ablate"])
        assert list(out) == ["original", "zero-cue-test", "ablate"]
        assert out["zero-cue-test"].row.avg_acc == pytest.approx(out["ablate"].row.avg_acc)  # the same edit
    finally:
        del FIX_METHODS["zero-cue-test"]


def test_unknown_fix_method_lists_the_registered_ones(case):
    F, W, b = case
    with pytest.raises(NeuroInspectError, match="unknown method 'nope'") as err:
        fix_head(W, b, F["train"], F["val"], {shortcut.SPURIOUS: [shortcut.CUE]}, method="nope")
    assert "\n" not in str(err.value) and all(m in str(err.value) for m in FIX_METHODS)


def test_every_declared_method_is_an_object_of_its_family():
    for name in FIX_METHODS:
        method = get_fix_method(name)
        assert isinstance(method, FixMethod) and method.name == name
        assert isinstance(method, GradientMethod) == FIX_METHODS.info(name).by_gradient, name
    from neuroinspect.report.format import method_label

    assert {m: method_label(m) for m in FIX_METHODS} == {m: FIX_METHODS.info(m).label for m in FIX_METHODS}
    assert method_label("original") == "original (ERM head)" and method_label("not-registered") == "not-registered"


# --------------------------------------------------------------------------- from the command line
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("data") / "data")


def _run(argv) -> int:
    return main([*argv, "--no-progress"])


def test_a_registered_fix_method_works_from_the_command_line(folder, tmp_path, capsys):
    @fix_method("halve-cue-test", "halve the neurons' weights (test)", needs_neurons=True)
    class HalveCue(FixMethod):
        def fit(self, p, cfg):
            weight = p.W.clone()
            for c, s in p.targets.items():
                weight[c, s] *= 0.5
            return FixResult(weight, p.b, self.name, p.targets, chosen={"factor": 0.5})

    try:
        common = ["--model", "planted:planted_cnn", "--data", str(folder), "--class", "apple", "--neurons", "5",
                  "--cache-dir", str(tmp_path / "cache")]
        assert _run(["edit", *common, "--method", "halve-cue-test", "--out", str(tmp_path / "edit")]) == 0
        record = json.loads((tmp_path / "edit" / "edit.json").read_text())
        assert record["method"] == "halve-cue-test" and record["chosen"] == {"factor": 0.5}
        assert _run(["compare", *common, "--methods", "halve-cue-test,ablate", "--seeds", "0",
                     "--out", str(tmp_path / "compare")]) == 0
        rows = json.loads((tmp_path / "compare" / "compare.json").read_text())["rows"]
        assert [r["method"] for r in rows] == ["original", "halve-cue-test", "ablate"]
        # its flag is read from the table: it needs neurons
        no_neurons = [a for a in common if a not in ("--neurons", "5")]
        assert _run(["edit", *no_neurons, "--method", "halve-cue-test", "--out", str(tmp_path / "none")]) == 2
        assert "no neurons chosen" in capsys.readouterr().err
    finally:
        del FIX_METHODS["halve-cue-test"]
    assert _run(["edit", "--model", "m", "--data", "d", "--class", "a", "--method", "halve-cue-test",
                 "--out", str(tmp_path / "gone")]) == 2


def test_a_registered_gradient_method_overrides_only_its_loss(case):
    F, W, b = case

    @fix_method("squared-logit-test", "CE + squared logits (test)", by_gradient=True, regularised=True)
    class SquaredLogit(GradientMethod):
        def regulariser(self, logits, z, ctx):
            return (logits ** 2).mean()

    try:
        res = fix_head(W, b, F["train"], F["val"], {shortcut.SPURIOUS: []}, method="squared-logit-test", lr=1e-2,
                       epochs=2, seed=0)
        assert res.method == "squared-logit-test" and res.trained and res.epochs_run >= 1
        assert [row["lam"] for row in res.search] == [0.01, 0.1, 1.0]  # regularised: λ searched
    finally:
        del FIX_METHODS["squared-logit-test"]


def test_a_registered_recipe_works_from_the_command_line(tmp_path):
    @O.register_recipe("logit-only-test")
    def _logit_only(gamma, epsilon):
        return -O.ClassLogit()

    try:
        out = tmp_path / "vis"
        assert _run(["visualize", "--model", "planted:planted_cnn", "--neurons", "5", "--classes", "0",
                     "--recipe", "logit-only-test", "--clip", "none", "--steps", "2", "--size", "32",
                     "--heatmaps", "0", "--out", str(out)]) == 0
        assert json.loads((out / "visualizations.json").read_text())["recipe"] == "logit-only-test"
    finally:
        del O.RECIPES["logit-only-test"]


def test_a_registered_model_source_works_from_the_command_line(test_source, folder, tmp_path, capsys):
    assert _run(["explain", "--model", "test:5", "--num-classes", "3", "--data", str(folder), "--class", "apple",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "explain")]) == 0
    assert (tmp_path / "explain" / "ranking.json").is_file()
    assert main(["explain", "--help"]) == 0
    assert "test:WIDTH" in capsys.readouterr().out  # the help lists it, from the table


def test_the_command_line_lists_what_the_tables_hold(capsys):
    from neuroinspect.core.model.sources import MODEL_SOURCES
    from neuroinspect.show.config import RECIPES

    for argv, names in ((["edit", "--help"], list(FIX_METHODS)), (["compare", "--help"], list(FIX_METHODS)),
                        (["visualize", "--help"], RECIPES.names(aliases=True)),
                        (["train", "--help"], [e.info.usage for e in MODEL_SOURCES.entries()])):
        assert main(argv) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert all(n in text for n in names), (argv, [n for n in names if n not in text])


# --------------------------------------------------------------------------- an Inspector by type, not by attributes
def test_visualize_recognises_an_inspector_by_its_type(tmp_path):
    from neuroinspect.core.model.session_api import InspectedModel
    from neuroinspect.session import Inspector
    from neuroinspect.show.visualize import _unpack

    lm = M.LoadedModel(_Tiny(4, 2).eval(), "tiny", M.Preprocess(16, 16, (0.0,) * 3, (1.0,) * 3), class_names=["a", "b"])
    ins = Inspector(lm, cache_dir=tmp_path, progress=False)
    assert isinstance(ins, InspectedModel)
    probe, pre, names, spec, source = _unpack(ins)
    assert probe is ins.probe and names == ["a", "b"] and source is ins

    class LooksAlike:  # has .probe and .loaded, as the old attribute sniffing wanted, but is not an Inspector
        probe, loaded = ins.probe, ins.loaded

    with pytest.raises(NeuroInspectError, match="cannot visualise a LooksAlike"):
        _unpack(LooksAlike())


# --------------------------------------------------------------------------- no hidden global state
def test_load_photo_is_memoised_and_read_only():
    from neuroinspect.synthetic.scenes import load_photo

    load_photo.cache_clear()
    a = load_photo("astronaut")
    assert load_photo("astronaut") is a and load_photo.cache_info().hits == 1
    with pytest.raises(ValueError):
        a[0, 0, 0] = 1  # no caller can change what the next one gets
    with pytest.raises(NeuroInspectError, match="no photo"):
        load_photo("no_such_photo")
    assert load_photo.cache_info().currsize == 1  # failures are not cached


def test_clip_unavailability_is_read_from_the_hubs_own_errors(monkeypatch, tmp_path):
    import logging

    from huggingface_hub import constants as hub_constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    from neuroinspect.show import clip as C

    wrapped = RuntimeError("Failed to download weights")
    wrapped.__cause__ = LocalEntryNotFoundError("not cached and cannot connect")
    assert C._is_offline(wrapped) and not C._is_offline(ValueError("bad checkpoint"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    disabled = logging.root.manager.disable
    with pytest.raises(C.ClipUnavailable, match="no internet connection"):
        C.load_clip(C.PAPER_CLIP)
    assert logging.root.manager.disable == disabled and hub_constants.HF_HUB_OFFLINE is True  # nothing toggled
