"""AlexNet (Krizhevsky, Sutskever, Hinton 2012): what the paper says, pinned.

The generic tests (shape, gradients, parameter count, MACs) run from tests/cases_alexnet.py in
tests/test_models.py; here: LRN against Sec. 3.3's formula, the two towers of Sec. 3.2, the
layers of Fig. 2, the init of Sec. 5, the smallest input, the tanh option, dropout's place,
PCA lighting (Sec. 4.1) in common/augment.py and common/cache.py, and train.py's recipes.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torchvision

from alexnet import model as alexnet
from alexnet import train
from common import recipe
from common.augment import pca_lighting
from common.cache import ImageSet, build_cache, rgb_pca
from common.config import ConfigError
from common.loader import IMAGENET_STD
from common.script import check_before_data, configure
from tests.helpers import make_image_tree
from tests.model_cases import build_meta, count_params

RULES = {**recipe.RULES, **train.RULES}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# Sec. 3.3: local response normalisation


def paper_lrn(a: torch.Tensor, k: float = 2.0, n: int = 5, alpha: float = 1e-4, beta: float = 0.75) -> torch.Tensor:
    """Sec. 3.3 written out: b^i = a^i / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} (a^j)^2)^beta."""
    big_n = a.shape[1]
    out = torch.empty_like(a)
    for i in range(big_n):
        lo, hi = max(0, i - n // 2), min(big_n - 1, i + n // 2)
        s = (a[:, lo:hi + 1] ** 2).sum(1)
        out[:, i] = a[:, i] / (k + alpha * s) ** beta
    return out


def test_lrn_is_the_papers_formula_with_the_papers_constants() -> None:
    # Large activations, so that the normalisation is far from the identity (k^-beta scaling).
    a = torch.randn(2, 11, 4, 4, generator=gen(0), dtype=torch.float64) * 60
    lrn = alexnet.TowerLRN(1).double()
    expect = paper_lrn(a)
    assert torch.allclose(lrn(a), expect, rtol=1e-10, atol=0)
    # torch's own LocalResponseNorm with the paper's alpha unscaled is a different layer: the
    # n * alpha at the line in model.py is what makes it the paper's.
    unscaled = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0).double()
    assert not torch.allclose(unscaled(a), expect, rtol=1e-4)
    assert (alexnet.LRN_K, alexnet.LRN_N, alexnet.LRN_ALPHA, alexnet.LRN_BETA) == (2.0, 5, 1e-4, 0.75)


def test_lrn_of_the_two_tower_net_stays_within_each_tower() -> None:
    """Sec. 3.2: each GPU normalises its own kernel maps; channel 47 never sees channel 48."""
    a = torch.randn(2, 96, 3, 3, generator=gen(1), dtype=torch.float64) * 60
    two = alexnet.TowerLRN(2).double()(a)
    assert torch.allclose(two, torch.cat([paper_lrn(a[:, :48]), paper_lrn(a[:, 48:])], 1), rtol=1e-10, atol=0)
    assert not torch.allclose(two, paper_lrn(a))  # one LRN over both would mix at the border
    m = build_meta(alexnet.alexnet)
    assert [n for n, x in m.features.named_children() if isinstance(x, alexnet.TowerLRN)] == ["norm1", "norm2"]
    assert m.features.norm1.towers == 2 and build_meta(alexnet.alexnet_one_tower).features.norm1.towers == 1
    assert not [x for x in build_meta(alexnet.alexnet_2014).modules() if isinstance(x, alexnet.TowerLRN)]


# ---------------------------------------------------------------------------------------------
# Sec. 3.2, 3.4, 3.5, Fig. 2: the layers


def _stage2(m: alexnet.AlexNet) -> nn.Sequential:
    f = m.features
    return nn.Sequential(f.conv2, f.act2, f.norm2, f.pool2)


def test_conv2_conv4_conv5_are_two_towers_conv3_sees_both() -> None:
    """A change in one tower's half of the input leaves the other tower's outputs unchanged."""
    torch.manual_seed(0)
    m = alexnet.alexnet(num_classes=10).eval()
    f = m.features
    for layer, stack in ((f.conv2, f.conv2), (f.conv2, _stage2(m)), (f.conv4, f.conv4), (f.conv5, f.conv5)):
        c_in, c_out = layer.in_channels, layer.out_channels
        x = torch.randn(1, c_in, 13, 13)
        x2 = x.clone()
        x2[:, c_in // 2:] += torch.randn(1, c_in // 2, 13, 13)  # tower 2's input only
        with torch.no_grad():
            y, y2 = stack(x), stack(x2)
        assert torch.equal(y[:, : c_out // 2], y2[:, : c_out // 2])  # tower 1 untouched
        assert not torch.allclose(y[:, c_out // 2:], y2[:, c_out // 2:])  # tower 2 sees it
        assert layer.groups == 2
    # conv3 takes input from both GPUs (Sec. 3.2), and so does conv1 (the image).
    x = torch.randn(1, 256, 13, 13)
    x2 = x.clone()
    x2[:, 128:] += 1.0
    with torch.no_grad():
        assert not torch.allclose(f.conv3(x)[:, :192], f.conv3(x2)[:, :192])
    assert f.conv1.groups == 1 and f.conv3.groups == 1
    # Kernel depths of Sec. 3.5: 5x5x48, 3x3x256, 3x3x192, 3x3x192.
    assert [tuple(getattr(f, f"conv{i}").weight.shape[1:]) for i in (2, 3, 4, 5)] == [
        (48, 5, 5), (256, 3, 3), (192, 3, 3), (192, 3, 3)]
    one = build_meta(alexnet.alexnet_one_tower)
    assert all(c.groups == 1 for c in one.modules() if isinstance(c, nn.Conv2d))


@pytest.mark.parametrize("name, side", [("alexnet", 227), ("alexnet_one_tower", 227), ("alexnet_2014", 224)])
def test_fig2_map_sizes_and_the_adaptive_pool_is_the_identity_at_the_native_size(name: str, side: int) -> None:
    m = build_meta(alexnet.MODELS[name])
    shapes: dict[str, tuple[int, ...]] = {}
    for n, mod in m.features.named_children():
        mod.register_forward_hook(lambda mod, inp, out, n=n: shapes.__setitem__(n, tuple(out.shape[1:])))
    m(torch.empty(1, 3, side, side, device="meta"))
    spatial = {n: s[1] for n, s in shapes.items()}
    assert [spatial[f"conv{i}"] for i in range(1, 6)] == [55, 27, 13, 13, 13]
    assert [spatial[p] for p in ("pool1", "pool2", "pool5")] == [27, 13, 6]
    assert shapes["pool5"][1:] == (alexnet.FC_INPUT_SIDE,) * 2  # so AdaptiveAvgPool2d(6) does nothing
    if name != "alexnet_2014":
        assert [shapes[f"conv{i}"][0] for i in range(1, 6)] == [96, 256, 384, 384, 256]
    else:
        assert [shapes[f"conv{i}"][0] for i in range(1, 6)] == [64, 192, 384, 256, 256]
    # Sec. 3.4: every pool overlaps, z = 3 > s = 2.
    pools = [p for p in m.modules() if isinstance(p, nn.MaxPool2d)]
    assert len(pools) == 3 and all((p.kernel_size, p.stride) == (3, 2) for p in pools)
    # At the native size the adaptive pool is exactly the identity (real numbers, tiny width).
    torch.manual_seed(0)
    small = alexnet.MODELS[name](num_classes=10, width=0.125).eval()
    with torch.no_grad():
        feats = small.features(torch.randn(2, 3, side, side))
        assert torch.equal(small.avgpool(feats), feats)


def test_2014_variant_is_torchvisions_alexnet() -> None:
    """Same parameter shapes, in the same order, as torchvision.models.alexnet: 61,100,840."""
    with torch.device("meta"):
        tv = torchvision.models.alexnet()
    ours = build_meta(alexnet.alexnet_2014)
    assert count_params(tv) == count_params(ours) == 61_100_840
    assert [p.shape for p in tv.parameters()] == [p.shape for p in ours.parameters()]
    # The paper's two-tower net is Sec. 3's "60 million parameters".
    assert count_params(build_meta(alexnet.alexnet)) == 60_965_224


def test_width_multiplier_scales_every_layer_and_keeps_towers_even() -> None:
    m = build_meta(alexnet.alexnet, width=0.5, num_classes=10)
    assert [getattr(m.features, f"conv{i}").out_channels for i in range(1, 6)] == [48, 128, 192, 192, 128]
    assert (m.classifier.fc6.in_features, m.classifier.fc6.out_features, m.classifier.fc7.out_features) == (
        128 * 36, 2048, 2048)
    odd = build_meta(alexnet.alexnet, width=0.1)  # 9.6 -> 10, 25.6 -> 26, 38.4 -> 38: all even
    assert all(c.out_channels % 2 == 0 for c in odd.modules() if isinstance(c, nn.Conv2d))
    with pytest.raises(ValueError, match="width"):
        alexnet.alexnet(width=0)


# ---------------------------------------------------------------------------------------------
# Sec. 5: initialisation


def test_init_is_sec5() -> None:
    torch.manual_seed(0)
    m = alexnet.alexnet(num_classes=1000)
    layers = {**dict(m.features.named_children()), **dict(m.classifier.named_children())}
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        w, b = layers[name].weight, layers[name].bias
        assert abs(w.mean().item()) < 0.001, name
        tol = 0.05 if w.numel() < 50_000 else 0.01  # conv1 has 34,848 weights
        assert abs(w.std().item() - 0.01) < tol * 0.01, name
        expect = 1.0 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        assert torch.equal(b, torch.full_like(b, expect)), name
    # init="torch" is PyTorch's default (kaiming-uniform, a = sqrt(5): std = 1/sqrt(3 fan_in)),
    # what torchvision's alexnet keeps, and the 2014 builder's default.
    for net in (alexnet.alexnet(num_classes=10, width=0.25, init="torch"), alexnet.alexnet_2014(num_classes=10)):
        fc7 = net.classifier.fc7
        assert abs(fc7.weight.std().item() - 1 / math.sqrt(3 * fc7.in_features)) < 0.03 / math.sqrt(fc7.in_features)
        assert fc7.bias.unique().numel() > 1  # uniform, not a constant
    # init="kaiming" (not the paper; He et al. 2015): std = gain / sqrt(fan_in) for the chosen
    # nonlinearity, grouped convs counting their own group's inputs; fc8 N(0, 0.01); biases 0.
    for activation, gain in (("relu", math.sqrt(2)), ("tanh", 5 / 3)):
        torch.manual_seed(0)
        net = alexnet.alexnet(num_classes=10, width=0.5, init="kaiming", activation=activation)
        for name, layer in (("conv4", net.features.conv4), ("fc7", net.classifier.fc7)):
            fan_in = layer.weight[0].numel()  # conv4: 3 x 3 x 96, one tower's maps
            assert abs(layer.weight.std().item() * math.sqrt(fan_in) / gain - 1) < 0.03, (activation, name)
        assert abs(net.classifier.fc8.weight.std().item() - 0.01) < 0.001
        assert all(torch.equal(b, torch.zeros_like(b)) for n, b in net.named_parameters() if n.endswith("bias"))
    paper_2014 = alexnet.alexnet_2014(num_classes=10, init="paper")
    assert torch.equal(paper_2014.classifier.fc6.bias, torch.ones_like(paper_2014.classifier.fc6.bias))
    with pytest.raises(ValueError, match="init"):
        alexnet.alexnet(init="xavier")


# ---------------------------------------------------------------------------------------------
# The smallest input, and train.py's rule for it


@pytest.mark.parametrize("name", list(alexnet.MODELS))
def test_min_input_size_is_what_the_network_takes(name: str) -> None:
    m = build_meta(alexnet.MODELS[name])
    side = alexnet.MIN_INPUT[name]
    assert m(torch.empty(1, 3, side, side, device="meta")).shape == (1, 1000)
    with pytest.raises(RuntimeError, match="too small"):
        m(torch.empty(1, 3, side - 1, side - 1, device="meta"))
    assert alexnet.MIN_INPUT == {"alexnet": 67, "alexnet_one_tower": 67, "alexnet_2014": 63}


def test_train_rule_refuses_below_the_smallest_input_and_the_meta_check_the_rest() -> None:
    smallest = min(alexnet.MIN_INPUT.values())
    configure(train, [f"--IMAGE_DIM={smallest}", "--ARCH=alexnet_2014"], RULES)  # accepted
    for arg in (f"--IMAGE_DIM={smallest - 1}", f"--EVAL_IMAGE_DIM={smallest - 1}"):
        with pytest.raises(ConfigError, match=f"at least {smallest} pixels"):
            configure(train, [arg, "--ARCH=alexnet_2014"], RULES)
    # What the rule lets through but the chosen network cannot take is refused on the meta device.
    for arch, side in (("alexnet", 67), ("alexnet_one_tower", 67), ("alexnet_2014", 63)):
        cfg, _ = configure(train, [f"--ARCH={arch}", f"--IMAGE_DIM={side}"], RULES)
        check_before_data(cfg, train.build_model, None)
        if side - 1 >= smallest:
            cfg, _ = configure(train, [f"--ARCH={arch}", f"--IMAGE_DIM={side - 1}"], RULES)
            with pytest.raises(ConfigError, match="too small for this network"):
                check_before_data(cfg, train.build_model, None)


# ---------------------------------------------------------------------------------------------
# Sec. 3.1 / Fig. 1: ReLU or tanh; Sec. 4.2: dropout


def test_activation_option_swaps_every_relu_for_tanh() -> None:
    torch.manual_seed(0)
    relu = alexnet.alexnet(num_classes=10, width=0.125)
    torch.manual_seed(0)
    tanh = alexnet.alexnet(num_classes=10, width=0.125, activation="tanh")
    count = lambda m, kind: sum(isinstance(x, kind) for x in m.modules())  # noqa: E731
    assert (count(relu, nn.ReLU), count(relu, nn.Tanh)) == (7, 0)  # 5 conv + fc6 + fc7
    assert (count(tanh, nn.ReLU), count(tanh, nn.Tanh)) == (0, 7)
    x = torch.randn(2, 3, 67, 67)
    seen: list[torch.Tensor] = []
    for mod in tanh.modules():
        if isinstance(mod, nn.Tanh):
            mod.register_forward_hook(lambda mod, inp, out: seen.append(out))
    with torch.no_grad():
        y_tanh, y_relu = tanh.eval()(x), relu.eval()(x)
    assert len(seen) == 7 and all(o.abs().max() <= 1 for o in seen) and seen[0].min() < 0  # tanh's range
    assert not torch.allclose(y_tanh, y_relu)  # same weights (same seed), other nonlinearity
    with pytest.raises(ValueError, match="activation"):
        alexnet.alexnet(activation="gelu")


def test_dropout_only_on_the_first_two_fully_connected_layers() -> None:
    m = build_meta(alexnet.alexnet)
    assert list(m.classifier._modules) == ["fc6", "act6", "drop6", "fc7", "act7", "drop7", "fc8"]
    drops = [(n, x.p) for n, x in m.named_modules() if isinstance(x, nn.Dropout)]
    assert drops == [("classifier.drop6", 0.5), ("classifier.drop7", 0.5)]
    # In train mode fc7 and fc8 see zeroed inputs, fc6 never does; eval mode is deterministic.
    torch.manual_seed(0)
    m = alexnet.alexnet(num_classes=10, width=0.125).train()
    inputs: dict[str, torch.Tensor] = {}
    for name in ("fc6", "fc7", "fc8"):
        getattr(m.classifier, name).register_forward_hook(
            lambda mod, inp, out, name=name: inputs.__setitem__(name, inp[0]))
    x = torch.randn(4, 3, 67, 67)
    m(x)
    assert (inputs["fc6"] == 0).float().mean() < 0.1
    for name in ("fc7", "fc8"):
        assert 0.3 < (inputs[name] == 0).float().mean() < 0.8, name
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x), m(x))
    assert not [x for x in build_meta(alexnet.alexnet, dropout=0.0).modules() if isinstance(x, nn.Dropout) and x.p]


# ---------------------------------------------------------------------------------------------
# Sec. 4.1: PCA lighting (common/augment.py, common/cache.py)


def rotation(seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen(seed), dtype=torch.float64))
    return q.float()


EIGVAL = torch.tensor([0.2, 0.02, 0.004])


def shifts(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The colour each image got, back in [0, 1] pixel units: (B, 3)."""
    d = (out - x) * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    per_pixel = d.flatten(2)
    assert torch.allclose(per_pixel, per_pixel[:, :, :1].expand_as(per_pixel), atol=1e-6)  # every pixel alike
    return per_pixel[:, :, 0]


def test_pca_lighting_follows_the_eigenvectors_weighted_by_the_eigenvalues() -> None:
    vec = rotation(0)
    transform = pca_lighting(EIGVAL, vec, std=0.1)
    x = torch.randn(20_000, 3, 2, 2, generator=gen(1))
    y = torch.arange(20_000) % 10
    out, y_out = transform(x, y, gen(2))
    assert torch.equal(y_out, y)  # labels unchanged
    d = shifts(out, x)  # (B, 3) = vec @ (alpha * eigval)
    coeff = d @ vec  # (B, 3): alpha_i * eigval_i, the shift in the eigenvector basis
    alpha = coeff / EIGVAL
    # zero mean over many draws, std 0.1 along each component, independent components
    assert alpha.mean(0).abs().max() < 0.005  # 3 standard errors of 0.1 / sqrt(20000)
    assert torch.allclose(alpha.std(0), torch.full((3,), 0.1), rtol=0.03)
    corr = torch.corrcoef(alpha.T)
    assert (corr - torch.eye(3)).abs().max() < 0.05
    # the covariance of the added colour is vec diag((0.1 eigval)^2) vec^T: the span, weighted
    cov = torch.cov(d.T)
    expect = vec @ torch.diag((0.1 * EIGVAL) ** 2) @ vec.T
    assert torch.allclose(cov, expect, atol=0.03 * float((0.1 * EIGVAL[0]) ** 2))
    # std 0 adds nothing
    assert torch.equal(pca_lighting(EIGVAL, vec, std=0.0)(x, y, gen(2))[0], x)


def test_pca_lighting_is_a_function_of_the_generator() -> None:
    transform = pca_lighting(EIGVAL, rotation(3))
    x, y = torch.randn(8, 3, 5, 5, generator=gen(0)), torch.arange(8)
    a, b, c = (transform(x.clone(), y, gen(s))[0] for s in (7, 7, 8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(x, torch.randn(8, 3, 5, 5, generator=gen(0)))  # input not modified
    with pytest.raises(ValueError):
        pca_lighting(EIGVAL, rotation(3), std=-0.1)
    with pytest.raises(ValueError):
        pca_lighting(EIGVAL[:2], rotation(3))


def coloured_images(n: int = 200, side: int = 6, seed: int = 0) -> torch.Tensor:
    """Pixels = grey level (large spread) along (1, 1, 1) + a smaller red-blue contrast + noise."""
    g = gen(seed)
    grey = torch.rand(n, side, side, 1, generator=g) * 160 + 40
    rb = (torch.rand(n, side, side, 1, generator=g) - 0.5) * 60
    noise = torch.randn(n, side, side, 3, generator=g) * 3
    pix = grey + rb * torch.tensor([1.0, 0.0, -1.0]) + noise
    return pix.round().clamp(0, 255).to(torch.uint8)


def test_rgb_pca_matches_a_full_pass_over_every_pixel() -> None:
    images = coloured_images()
    eigval, eigvec = rgb_pca(ImageSet(images, torch.zeros(len(images), dtype=torch.int64)), pixels_per_image=36)
    everything = images.reshape(-1, 3).double() / 255
    ref_val, ref_vec = torch.linalg.eigh(torch.cov(everything.T))
    ref_val, ref_vec = ref_val.flip(0), ref_vec.flip(1)
    assert torch.all(eigval[:-1] >= eigval[1:])  # largest first
    assert torch.allclose(eigval.double(), ref_val, rtol=0.05)
    assert torch.allclose(torch.abs(eigvec.double().T @ ref_vec), torch.eye(3, dtype=torch.float64), atol=0.01)
    assert torch.allclose(eigvec.T @ eigvec, torch.eye(3), atol=1e-5)
    grey = torch.ones(3) / math.sqrt(3)
    assert float(eigvec[:, 0] @ grey) > 0.99  # the brightest direction: grey, sign made positive
    red_blue = torch.tensor([1.0, 0.0, -1.0]) / math.sqrt(2)
    assert abs(float(eigvec[:, 1] @ red_blue)) > 0.99
    # A fixed, seeded sample: the same numbers every call.
    again = rgb_pca(ImageSet(images, torch.zeros(len(images), dtype=torch.int64)), pixels_per_image=36)
    assert torch.equal(again[0], eigval) and torch.equal(again[1], eigvec)


def test_rgb_pca_is_saved_beside_the_cache_and_reused(tmp_path: Path) -> None:
    tree = make_image_tree(tmp_path / "src", n_classes=3, n_train=4, size=(20, 16))
    train_set = build_cache(tree, "train", 16, tmp_path / "cache", workers=1)
    assert train_set.source is not None and train_set.source.suffix == ".npy"
    eigval, eigvec = rgb_pca(train_set)
    saved = train_set.source.with_suffix(".pca.json")
    meta = json.loads(saved.read_text())
    assert torch.allclose(torch.tensor(meta["eigval"]), eigval) and torch.allclose(torch.tensor(meta["eigvec"]), eigvec)
    # A later run (a fresh load of the same cache) reads the file instead of computing.
    meta["eigval"] = [3.0, 2.0, 1.0]
    saved.write_text(json.dumps(meta))
    reloaded = build_cache(tree, "train", 16, tmp_path / "cache", workers=1)
    assert rgb_pca(reloaded)[0].tolist() == [3.0, 2.0, 1.0]
    # ... unless it was computed another way (another sample): then it is computed anew.
    assert rgb_pca(reloaded, pixels_per_image=8)[0].tolist() != [3.0, 2.0, 1.0]
    # A set built in memory has no source and leaves no file anywhere.
    memory = ImageSet(train_set.images.clone(), train_set.labels)
    assert memory.source is None
    before = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert torch.allclose(rgb_pca(memory)[0], eigval)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == before


def test_train_py_adds_pca_lighting_only_when_asked() -> None:
    images = coloured_images(20, 4)
    data = ImageSet(images, torch.arange(20) % 10)
    cfg, _ = configure(train, [], RULES)
    (transform,) = train.batch_transforms(cfg, data)
    x, y = torch.zeros(4, 3, 2, 2), torch.arange(4)
    assert not torch.equal(transform(x, y, gen(0))[0], x)
    cfg, _ = configure(train, ["--PCA_LIGHTING=0"], RULES)
    assert train.batch_transforms(cfg, data) == []
    with pytest.raises(ConfigError, match="PCA_LIGHTING"):
        configure(train, ["--PCA_LIGHTING=-0.1"], RULES)


# ---------------------------------------------------------------------------------------------
# train.py: the recipes hold what the paper and the write-up state


def test_paper_recipe() -> None:
    cfg, _ = configure(train, ["--RECIPE=paper"], RULES)
    expect = {"ARCH": "alexnet", "ACTIVATION": "relu", "OPTIMIZER": "sgd", "LEARNING_RATE": 0.01,
              "MOMENTUM": 0.9, "NESTEROV": False, "WEIGHT_DECAY": 5e-4, "BATCH_SIZE": 128,
              "LR_SCHEDULE": "plateau", "LEARNING_RATE_DECAY_FACTOR": 0.1, "NUM_EPOCHS": 90, "DROPOUT": 0.5,
              "EVAL_VIEWS": "10crop", "PCA_LIGHTING": 0.1, "IMAGE_DIM": 227, "HFLIP": True,
              "LABEL_SMOOTHING": 0.0, "WARMUP_EPOCHS": 0.0, "INIT": "paper", "WIDTH": 1.0}
    assert {k: cfg[k] for k in expect} == expect
    # 227 crops of a 256 px image, and the test crops of the same 256 px square.
    assert cfg["SCALE_JITTER"] == (256 / 227, 256 / 227)
    assert round(cfg["IMAGE_DIM"] / cfg["EVAL_CROP"]) == 256
    check_before_data(cfg, train.build_model, None)
    with torch.device("meta"):
        m = train.build_model(cfg, 1000)
    assert count_params(m) == 60_965_224


def test_writeup_recipe() -> None:
    cfg, _ = configure(train, ["--RECIPE=writeup"], RULES)
    expect = {"OPTIMIZER": "adamw", "LEARNING_RATE": 1e-4, "WEIGHT_DECAY": 0.1, "NUM_EPOCHS": 90,
              "LR_SCHEDULE": "step", "LEARNING_RATE_DECAY_FACTOR": 0.1, "LEARNING_RATE_DECAY_STEP_SIZE": 30,
              "BATCH_SIZE": 64, "IMAGE_DIM": 227}
    assert {k: cfg[k] for k in expect} == expect


def test_modern_recipe_and_command_line_over_a_recipe() -> None:
    cfg, _ = configure(train, [], RULES)
    assert (cfg["ARCH"], cfg["IMAGE_DIM"], cfg["ACTIVATION"], cfg["DECAY_NORM_AND_BIAS"]) == ("alexnet", 227, "relu",
                                                                                            False)
    cfg, _ = configure(train, ["--RECIPE=paper", "--ACTIVATION=tanh", "--NUM_EPOCHS=3"], RULES)
    assert (cfg["ACTIVATION"], cfg["NUM_EPOCHS"], cfg["LEARNING_RATE"]) == ("tanh", 3, 0.01)
    with torch.device("meta"):
        m = train.build_model(cfg, 10)
    assert any(isinstance(x, nn.Tanh) for x in m.modules())
    for bad in ("--ACTIVATION=sigmoid", "--ARCH=vgg16", "--WIDTH=0", "--DROPOUT=1.0", "--INIT=xavier"):
        with pytest.raises(ConfigError, match="is not possible"):
            configure(train, [bad], RULES)
