"""CLIP loading through the real code paths, on tiny random-weight models the tests save themselves."""
from __future__ import annotations

import json
import logging

import pytest
import torch
import torch.nn.functional as F

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.show import clip as C

TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def open_clip_files(tmp_path_factory):
    import open_clip

    d = tmp_path_factory.mktemp("openclip")
    cfg = d / "tiny-clip-test.json"
    cfg.write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip-test")
    torch.save(model.state_dict(), d / "tiny.pt")
    torch.save({"conv.weight": torch.zeros(3, 3)}, d / "not_clip.pt")
    return d


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPConfig, CLIPModel

    d = tmp_path_factory.mktemp("hfclip")
    text = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=77)
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(d / "model")
    # CLIP's BPE vocabulary (bundled with open_clip) written as a transformers CLIPTokenizer
    st = SimpleTokenizer()
    rename = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    tok = d / "model"
    (tok / "vocab.json").write_text(json.dumps({rename.get(k, k): v for k, v in st.encoder.items()}))
    merges = sorted(st.bpe_ranks, key=st.bpe_ranks.get)
    (tok / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    (tok / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "model_max_length": 77}))
    return d / "model"


def _check_clip(clip: C.ClipModel):
    emb = clip.encode_text(["a photo of a cat.", "a photo of a dog."])
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(emb[0], emb[1])
    t = clip.class_embedding("tabby cat, house cat")
    prompts = C.class_prompts("tabby cat, house cat")
    assert len(prompts) == 2 * len(C.TEMPLATES) and "a photo of a house cat." in prompts
    assert abs(float(t.norm()) - 1) < 1e-5
    assert torch.allclose(t, F.normalize(clip.encode_text(prompts).mean(0), dim=0), atol=1e-5)  # re-normalised mean
    assert clip.class_embedding("tabby cat, house cat") is t  # cached per (CLIP, class text)
    x = torch.rand(2, 3, 48, 48, requires_grad=True)  # any size: resized to CLIP's own input
    sim = clip.similarity(x, ["tabby cat, house cat", "dog"])
    assert sim.shape == (2,) and (sim.abs() <= 1).all()
    sim.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_open_clip_checkpoint_loads_through_the_spec(open_clip_files):
    d = open_clip_files
    clip = C.load_clip(f"open_clip:{d}/tiny-clip-test.json@{d}/tiny.pt")
    assert clip.image_size == 32 and clip.spec.startswith("open_clip:")
    _check_clip(clip)
    # the same weights, by registered name
    again = C.load_clip(f"open_clip:tiny-clip-test@{d}/tiny.pt")
    assert torch.allclose(again.class_embedding("cat"), clip.class_embedding("cat"), atol=1e-6)


def test_hf_clip_folder_loads_with_its_tokenizer_and_without_one(hf_dir, tmp_path):
    clip = C.load_clip(f"hf:{hf_dir}")
    ids = clip.tokenize(["a photo of a cat."])
    assert ids[0, 0] == 49406 and ids[0, 7] == 49407
    _check_clip(clip)
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        (bare / f).write_bytes((hf_dir / f).read_bytes())
    fallback = C.load_clip(f"hf:{bare}")  # no tokenizer files: CLIP's own BPE, the same ids
    assert torch.equal(fallback.tokenize(["a photo of a cat."])[0, :8], ids[0, :8])
    assert torch.allclose(fallback.class_embedding("cat"), clip.class_embedding("cat"), atol=1e-5)


def test_bad_specs_and_files_fail_with_one_clear_line(open_clip_files, tmp_path):
    d = open_clip_files
    assert C.parse_clip_spec("none") is None and C.parse_clip_spec(None) is None
    s = C.parse_clip_spec("open_clip:ViT-B-32/laion2b_s34b_b79k")
    assert (s.backend, s.model, s.pretrained) == ("open_clip", "ViT-B-32", "laion2b_s34b_b79k")
    for spec, msg in [("open_clip:", "cannot parse"), ("clip-vit", "cannot parse"), ("foo:bar", "unknown CLIP backend"),
                      ("open_clip:ViT-B-99/x", "unknown OpenCLIP model"),
                      ("open_clip:ViT-B-32/nosuchtag", "no pretrained tag"),
                      (f"open_clip:tiny-clip-test@{d}/missing.pt", "does not exist"),
                      (f"open_clip:tiny-clip-test@{d}/not_clip.pt", "not a CLIP checkpoint"),
                      (f"hf:{tmp_path}", "not a transformers model folder")]:
        with pytest.raises(NeuroInspectError, match=msg) as err:
            C.load_clip(spec)
        assert "\n" not in str(err.value)


def test_offline_fallback_warns_once_and_is_recorded(monkeypatch, caplog, tmp_path):
    from neuroinspect.core.model.models import LoadedModel
    from neuroinspect.show.visualize import visualize_neurons
    from test_visualize import PRE, STRIPE, StripeCNN

    from huggingface_hub import constants as hub_constants

    # the hub's own offline mode (what HF_HUB_OFFLINE=1 sets) and an empty cache: the weights cannot be had
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded = LoadedModel(StripeCNN().eval(), "test:stripe", PRE, class_names=["stripes", "other"])
    with caplog.at_level(logging.WARNING):
        rep = visualize_neurons(loaded, [STRIPE, 0], ["stripes", "other"], tmp_path / "v", clip=C.PAPER_CLIP,
                                steps=2, size=32, batch=1, progress=False)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "CLIP" in r.getMessage()]
    assert len(warnings) == 1  # one warning for the run, not one per image or batch
    assert "CLIP unavailable" in warnings[0].getMessage() and "--clip none" in warnings[0].getMessage()
    assert rep.clip_fallback is True and "no internet" in rep.clip_fallback_reason
    assert rep.recipe == "class" and rep.clip is None and rep.clip_requested == C.PAPER_CLIP
    assert all(r.recipe == "class" and r.clip_used is False for r in rep.images)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        rep = visualize_neurons(loaded, [0], ["other"], tmp_path / "w", clip="none", steps=1, size=32, progress=False)
    assert not [r for r in caplog.records if "CLIP" in r.getMessage()] and rep.clip_fallback is False  # on purpose


def test_clip_illusion_renders_end_to_end_on_a_random_clip(open_clip_files, tmp_path):
    from neuroinspect.core.model.models import LoadedModel
    from neuroinspect.show.visualize import visualize_neurons
    from test_visualize import PRE, STRIPE, StripeCNN

    d = open_clip_files
    spec = f"open_clip:tiny-clip-test@{d}/tiny.pt"
    loaded = LoadedModel(StripeCNN().eval(), "test:stripe", PRE, class_names=["stripes", "other"])
    rep = visualize_neurons(loaded, [STRIPE], ["stripes"], tmp_path / "v", clip=spec, steps=15, size=32,
                            class_text={"stripes": "red stripes"}, progress=False)
    assert rep.recipe == "clip-illusion" and rep.clip == spec and rep.clip_fallback is False
    img = rep.images[0].to_dict()
    assert img["clip_used"] is True and -1 <= img["clip_similarity"] <= 1
    assert img["activation"] > img["start_activation"]
