"""Vision Transformer (Dosovitskiy et al. 2020, arXiv:2010.11929; DeiT, arXiv:2012.12877): Table 1,
the attention, position-embedding interpolation (Sec. 3.2), stochastic depth, the two inits, the
torchvision mapping, attention_maps, and vit/train.py's recipes, rules and seams. The generic
model tests (shape, gradients, parameter counts, MACs) run from tests/cases_vit.py."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torchvision
from torchvision.models.vision_transformer import VisionTransformer

from common import optim, recipe, script
from tests.model_cases import build_meta, count_params
from tests.test_train_scripts import assert_refused
from vit import model as vit
from vit import train

SMALL = {"image_size": 32, "patch_size": 8, "width": 16, "layers": 3, "heads": 2, "init": "deit"}


def small(**kwargs) -> vit.ViT:
    torch.manual_seed(0)
    return vit.deit_tiny_16(num_classes=10, **{**SMALL, **kwargs})


# --- Table 1 (and DeiT's Table 1)


@pytest.mark.parametrize("name", list(vit.MODELS))
def test_table1_sizes(name: str) -> None:
    """Layers, hidden size D, MLP size, heads of the row; the patch size of the name; 1 + N
    tokens with N = (224 / P)^2 (Eq. 1)."""
    row, patch = vit.VARIANTS[name]
    cfg = vit.VIT_CONFIGS[row]
    m = build_meta(vit.MODELS[name])
    assert len(m.blocks) == cfg.layers and m.patch_size == patch == int(name.rsplit("_", 1)[1])
    block = m.blocks[0]
    assert block.attn.qkv.weight.shape == (3 * cfg.width, cfg.width) and block.attn.heads == cfg.heads
    assert block.mlp.fc1.weight.shape == (cfg.mlp_dim, cfg.width)
    prefix = 2 if name in vit.DISTILLED else 1  # DeiT's distillation token has a position too
    assert m.pos_embedding.shape == (1, prefix + (224 // patch) ** 2, cfg.width)
    assert m.class_token.shape == (1, 1, cfg.width)


def test_table1_published_parameter_counts_are_torchvisions() -> None:
    """Table 1's 86M / 307M / 632M, to the parameter, are torchvision's models (meta device)."""
    rounded = {"vit_b_16": 86e6, "vit_l_16": 307e6, "vit_h_14": 632e6}
    for name in vit.TORCHVISION:
        with torch.device("meta"):
            theirs = getattr(torchvision.models, name)()
        assert count_params(build_meta(vit.MODELS[name])) == count_params(theirs)
        if name in rounded:
            assert abs(count_params(theirs) - rounded[name]) < 3e6  # ViT-L/16: 304M printed as 307M
    assert round(count_params(build_meta(vit.deit_tiny_16)) / 1e6, 1) == 5.7  # DeiT: "5M"
    assert round(count_params(build_meta(vit.deit_small_16)) / 1e6) == 22


def test_blocks_are_pre_norm_with_gelu_mlp() -> None:
    """Eqs. 2-3: z' = MSA(LN(z)) + z, z = MLP(LN(z')) + z'; the MLP is fc, GELU, fc."""
    m = small().eval()
    block = m.blocks[0]
    z = torch.randn(2, 17, 16)
    with torch.no_grad():
        z1 = block.attn(block.norm1(z)) + z
        fc = block.mlp
        want = fc.fc2(nn.functional.gelu(fc.fc1(block.norm2(z1)))) + z1
        assert torch.allclose(block(z), want, atol=1e-6)
    # Eq. 4: the head reads LN of the class token's output only.
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        z = m.embed(x)
        for b in m.blocks:
            z = b(z)
        assert torch.allclose(m(x), m.head(m.norm(z[:, 0])), atol=1e-6)


def test_attention_is_sdpa_of_the_explicit_softmax() -> None:
    """The fused kernel computes softmax(q k^T / sqrt(D_h)) v, the weights attention_maps shows."""
    attn = small().blocks[0].attn.eval()
    x = torch.randn(2, 17, 16)
    q, k, v = attn._qkv(x)
    a = attn.weights(x)  # (B, h, T, T)
    explicit = (a @ v).transpose(1, 2).reshape(2, 17, 16)
    with torch.no_grad():
        assert torch.allclose(attn(x), attn.proj(explicit), atol=1e-5)


def test_attention_maps_rows_sum_to_one() -> None:
    m = small().eval()
    with torch.no_grad():
        maps = m.attention_maps(torch.randn(2, 3, 32, 32))
    assert len(maps) == 3
    for a in maps:
        assert a.shape == (2, 2, 17, 17) and (a >= 0).all()
        assert torch.allclose(a.sum(-1), torch.ones(2, 2, 17), atol=1e-5)


# --- errors a user can hit


def test_shapes_that_cannot_be_built_are_refused() -> None:
    with pytest.raises(ValueError, match="heads do not divide the width"):
        small(heads=3)
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        small(image_size=36)
    with pytest.raises(ValueError, match="does not split into 8x8 patches"):
        small()(torch.randn(1, 3, 36, 36))


# --- Sec. 3.2: position embeddings at another resolution


def test_pos_embedding_interpolation_is_a_no_op_at_the_same_size() -> None:
    m = small()
    assert vit.interpolate_pos_embedding(m.pos_embedding, (4, 4)) is m.pos_embedding


def test_pos_embedding_interpolation_shape_and_class_token() -> None:
    pos = torch.randn(1, 1 + 16, 8)
    out = vit.interpolate_pos_embedding(pos, (6, 6))
    assert out.shape == (1, 1 + 36, 8)
    assert torch.equal(out[:, 0], pos[:, 0])  # the class token has no location: kept
    const = torch.ones(1, 1 + 16, 8)  # bicubic keeps a constant field constant
    assert torch.allclose(vit.interpolate_pos_embedding(const, (7, 7)), torch.ones(1, 50, 8), atol=1e-5)
    # Down and back up on a smooth field lands close (2-D, not a 1-D reshuffle of the sequence).
    ii, jj = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    field = torch.cat([torch.zeros(1, 1), (ii + 2 * jj).reshape(1, 64)], 1).unsqueeze(-1)  # (1, 65, 1)
    up = vit.interpolate_pos_embedding(field, (16, 16))[0, 1:, 0].reshape(16, 16)
    assert up[0, 0] < up[0, -1] and up[0, 0] < up[-1, 0] and up[0, -1] > up[-1, 0]  # j weighs twice


def test_forward_at_another_resolution_and_resize() -> None:
    m = small().eval()
    with torch.no_grad():
        assert m(torch.randn(2, 3, 48, 48)).shape == (2, 10)  # 6 x 6 grid, interpolated on the fly
        x = torch.randn(2, 3, 48, 48)
        before = m(x)
        m.resize_pos_embedding(48)  # stored once, as for fine-tuning
        assert m.pos_embedding.shape == (1, 37, 16) and isinstance(m.pos_embedding, nn.Parameter)
        assert torch.allclose(m(x), before, atol=1e-6)


def test_state_dict_from_another_resolution_loads_interpolated() -> None:
    at_32 = small()
    at_64 = small(image_size=64)
    at_64.load_state_dict(at_32.state_dict())
    want = vit.interpolate_pos_embedding(at_32.pos_embedding.detach(), (8, 8))
    assert torch.equal(at_64.pos_embedding.detach(), want)


# --- stochastic depth (Huang et al. 2016; DeiT)


def test_drop_path_rates_rise_linearly_over_depth() -> None:
    m = small(drop_path=0.2, layers=5)
    assert [b.drop_path for b in m.blocks] == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])


def test_stochastic_depth_is_off_in_eval_mode() -> None:
    with_dp, without = small(drop_path=0.5), small(drop_path=0.0)
    without.load_state_dict(with_dp.state_dict())
    x = torch.randn(4, 3, 32, 32)
    with_dp.eval(), without.eval()
    with torch.no_grad():
        assert torch.equal(with_dp(x), without(x))
        with_dp.train()
        torch.manual_seed(1)
        a = with_dp(x)
        torch.manual_seed(2)
        assert not torch.allclose(a, with_dp(x))  # some samples' branches dropped in training


def test_drop_path_drops_whole_samples_and_keeps_the_mean() -> None:
    x = torch.ones(20000, 3, 4)
    torch.manual_seed(0)
    out = vit.drop_path(x, 0.25, training=True)
    per_sample = out[:, 0, 0]
    assert per_sample.unique().tolist() == pytest.approx([0.0, 1 / 0.75])
    assert (out == out[:, :1, :1]).all()  # one draw per sample
    assert abs(out.mean().item() - 1.0) < 0.02
    assert vit.drop_path(x, 0.25, training=False) is x


def test_dropout_kwarg_is_off_in_eval_mode() -> None:
    m = small(dropout=0.1)
    assert sum(isinstance(x, nn.Dropout) and x.p == 0.1 for x in m.modules()) == 1 + 2 * 3
    m.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(m(x), m(x))


# --- init: the official code's (jax) and DeiT's


def test_jax_init() -> None:
    """models.py of the official code: zero head and class token, N(0, 0.02) position
    embeddings, Xavier-uniform q, k, v (each D x D) and MLP kernels, LeCun-normal patches."""
    torch.manual_seed(0)
    m = vit.deit_small_16(num_classes=10, init="jax")
    assert not m.head.weight.any() and not m.head.bias.any() and not m.class_token.any()
    assert abs(m.pos_embedding.std().item() - 0.02) < 0.001
    d = 384
    for w in m.blocks[0].attn.qkv.weight.chunk(3):
        assert w.abs().max() <= math.sqrt(6 / (2 * d)) and w.abs().max() > 0.9 * math.sqrt(6 / (2 * d))
    fc1 = m.blocks[0].mlp.fc1
    assert fc1.weight.abs().max() <= math.sqrt(6 / (d + 4 * d)) and fc1.bias.abs().max() < 1e-4
    conv, lecun = m.patch_embed.proj.weight, math.sqrt(1 / (3 * 16 * 16))
    assert abs(conv.std().item() / lecun - 1) < 0.02  # flax: truncated at 2 std, rescaled to std lecun
    assert conv.abs().max() <= 2 * lecun / vit.TRUNCATED_STD


def test_deit_init() -> None:
    torch.manual_seed(0)
    m = vit.deit_small_16(num_classes=10, init="deit")
    for t in (m.head.weight, m.blocks[0].attn.qkv.weight, m.blocks[0].mlp.fc2.weight, m.pos_embedding):
        assert abs(t.std().item() - 0.02) < 0.001  # truncated at +-2 absolute: N(0, 0.02) in effect
    assert not m.blocks[0].mlp.fc1.bias.any()
    with pytest.raises(ValueError, match="init must be one of"):
        small(init="xavier")


# --- torchvision's weights


def _randomised_torchvision(**kwargs) -> VisionTransformer:
    torch.manual_seed(0)
    tv = VisionTransformer(**kwargs)
    with torch.no_grad():
        for p in tv.parameters():
            p.normal_(0, 0.3)  # no zero head, no unit LayerNorm to match by chance
    return tv.eval()


def test_from_torchvision_gives_the_same_function() -> None:
    tv = _randomised_torchvision(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                                 mlp_dim=32, num_classes=10)
    ours = vit.vit_b_16(num_classes=10, image_size=32, patch_size=8, layers=2, heads=2, width=16,
                        mlp_dim=32).eval()
    ours.load_state_dict(vit.from_torchvision(tv.state_dict()), strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), tv(x), atol=1e-5)


@pytest.mark.parametrize("name", list(vit.TORCHVISION))
def test_from_torchvision_is_name_complete(name: str) -> None:
    """Every torchvision key maps to one of ours, every one of ours is hit, shapes equal."""
    tv_name, needs = vit.TORCHVISION[name]
    assert tv_name == name and needs == {"PATCH_SIZE": vit.VARIANTS[name][1]}
    with torch.device("meta"):
        tv = getattr(torchvision.models, tv_name)()
    mapped = vit.from_torchvision(tv.state_dict())
    ours = build_meta(vit.MODELS[name]).state_dict()
    assert len(mapped) == len(tv.state_dict()) and mapped.keys() == ours.keys()
    assert all(mapped[k].shape == ours[k].shape for k in ours)


def test_from_torchvision_refuses_an_unknown_key() -> None:
    with pytest.raises(KeyError, match="heads.pre_logits"):
        vit.from_torchvision({"heads.pre_logits.weight": torch.zeros(1)})


# --- vit/train.py


def configure(*argv: str) -> dict:
    cfg, _ = script.configure(train, list(argv), {**recipe.RULES, **train.RULES})
    return cfg


def test_bad_constants_are_refused_in_one_line(tmp_path: Path, capsys) -> None:
    cases = {
        "--IMAGE_DIM=100": "IMAGE_DIM=100 is not divisible by the patch size 8",
        "--EVAL_IMAGE_DIM=100": "EVAL_IMAGE_DIM=100 is not divisible by the patch size 8",
        "--HEADS=5": "HEADS=5 does not divide the width 192",
        "--ARCH=vit_s_16": "ARCH='vit_s_16' is not possible: vit_b_16",
        "--INIT=xavier": "INIT='xavier' is not possible",
        "--DROP_PATH=1.0": "DROP_PATH=1.0 is not possible",
        "--AUTO_AUGMENT=auto": "AUTO_AUGMENT='auto' is not possible",
    }
    assert_refused(train, cases, tmp_path, capsys)
    assert not list(tmp_path.iterdir())  # refused before any data work


def test_every_recipe_builds_on_the_meta_device() -> None:
    for name in ("", *train.RECIPES):
        cfg = configure(f"--RECIPE={name}")
        script.check_before_data(cfg, train.build_model, None)


def test_paper_recipe() -> None:
    """Sec. 4.1, Table 3 (ImageNet, ViT-B/16), Appendix B.1."""
    cfg = configure("--RECIPE=paper")
    assert (cfg["ARCH"], cfg["PATCH_SIZE"], cfg["IMAGE_DIM"]) == ("vit_b_16", 16, 224)
    assert cfg["OPTIMIZER"] in ("adam", "adamw") and tuple(cfg["ADAM_BETAS"]) == (0.9, 0.999)
    assert (cfg["LEARNING_RATE"], cfg["WEIGHT_DECAY"], cfg["NUM_EPOCHS"]) == (3e-3, 0.3, 300)
    assert cfg["DROPOUT"] == 0.1 and cfg["DROP_PATH"] == 0 and cfg["GRAD_CLIP"] == 1.0
    assert cfg["BATCH_SIZE"] * 8 == 4096  # per GPU, on eight
    assert cfg["WARMUP_EPOCHS"] > 0 and cfg["LABEL_SMOOTHING"] == 0
    assert cfg["DECAY_NORM_AND_BIAS"] and cfg["DECAY_TOKENS"]
    assert (cfg["AUTO_AUGMENT"], cfg["MIXUP_ALPHA"], cfg["CUTMIX_ALPHA"], cfg["RANDOM_ERASING"]) == ("none", 0, 0, 0)


def _decay_by_name(cfg: dict) -> dict[str, float]:
    torch.manual_seed(0)
    model = train.build_model(cfg, 10)
    groups = optim.param_groups(model, cfg, train.param_options)
    by_id = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    return {n: by_id[id(p)] for n, p in model.named_parameters()}


def test_no_weight_decay_on_tokens_norms_and_biases_by_default() -> None:
    decay = _decay_by_name(configure("--RECIPE=tiny"))
    assert decay["pos_embedding"] == decay["class_token"] == 0.0
    assert decay["blocks.0.norm1.weight"] == decay["blocks.0.attn.qkv.bias"] == 0.0
    assert decay["blocks.0.attn.qkv.weight"] == decay["head.weight"] == train.WEIGHT_DECAY
    paper = _decay_by_name(configure("--RECIPE=tiny", "--DECAY_TOKENS=True", "--DECAY_NORM_AND_BIAS=True"))
    assert set(paper.values()) == {train.WEIGHT_DECAY}  # the paper decays everything


@pytest.mark.parametrize("auto", ["rand", "trivial", "none"])
def test_batch_transforms_soft_labels(auto: str) -> None:
    class Set:
        num_classes = 10

    cfg = configure("--RECIPE=tiny", f"--AUTO_AUGMENT={auto}")
    transforms = train.batch_transforms(cfg, Set())
    assert len(transforms) == (3 if auto != "none" else 2)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8)
    g = torch.Generator().manual_seed(0)
    for t in transforms:
        x, y = t(x, y, g)
    assert x.shape == (8, 3, 32, 32) and torch.isfinite(x).all()
    assert y.shape == (8, 10) and torch.allclose(y.sum(1), torch.ones(8))
    none = configure("--RECIPE=paper")
    assert train.batch_transforms(none, Set()) == []


def test_pretrained_asks_for_the_shapes_of_torchvisions_weights(tmp_path: Path, capsys) -> None:
    """PRETRAINED=True is checked on the meta device before any data or download: a builder
    torchvision lacks, and the patch size its weights were trained with."""
    refused = {
        "deit_tiny_16": "no ImageNet weights for ARCH='deit_tiny_16'",
        "vit_b_32": "vit_b_32 weights assume --PATCH_SIZE=32",
    }
    for arch, message in refused.items():
        with pytest.raises(SystemExit) as exit_:
            train.main([f"--ARCH={arch}", "--PRETRAINED=True", f"--DATA_DIR={tmp_path}"])
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_pretrained_weights_at_224_px_load_into_a_128_px_model() -> None:
    """The check before the download lets the position embedding's length differ (the model
    interpolates it, Sec. 3.2); the load gives the 128 px grid, and equals interpolating by hand."""
    from common import pretrained
    tv = torchvision.models.vision_transformer.VisionTransformer(
        image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32)
    ours = vit.vit_b_16(num_classes=10, image_size=16, patch_size=8, layers=1, heads=2, width=16, mlp_dim=32)
    cfg = {"ARCH": "vit_b_16", "PATCH_SIZE": 16}
    state = vit.from_torchvision(tv.state_dict())
    assert pretrained.fit_into(ours, state, "torchvision's vit") == ["head.weight", "head.bias"]
    assert ours.pos_embedding.shape == (1, 1 + 2 * 2, 16)
    expected = vit.interpolate_pos_embedding(state["pos_embedding"], (2, 2))
    assert torch.equal(ours.pos_embedding.detach(), expected)
    with torch.device("meta"):
        assert pretrained.check({**cfg, "PATCH_SIZE": 16}, vit.vit_b_16(image_size=128), vit.TORCHVISION,
                                vit.from_torchvision) == "vit_b_16"
