"""The Vision Transformer, written to be read against its paper.

Dosovitskiy, Beyer, Kolesnikov, Weissenborn, Zhai, Unterthiner, Dehghani, Minderer, Heigold,
Gelly, Uszkoreit, Houlsby. "An Image is Worth 16x16 Words: Transformers for Image Recognition at
Scale". arXiv:2010.11929 (2020).

The small models trained from scratch: Touvron, Cord, Douze, Massa, Sablayrolles, Jegou.
"Training data-efficient image transformers & distillation through attention" (DeiT).
arXiv:2012.12877 (2020), Table 1; its distillation token and head (Sec. 4), built with
``distilled=True`` (the loss and the teacher are common/distill.py's).
Stochastic depth: Huang, Sun, Liu, Sedra, Weinberger. "Deep Networks with Stochastic Depth".
arXiv:1603.09382 (2016).

The file follows Sec. 3.1: the patch embedding and class token (Eq. 1), the encoder block of
multi-head self-attention and MLP with pre-norm residuals (Eqs. 2-3), the head on the class
token (Eq. 4); then the position-embedding interpolation of Sec. 3.2, Table 1 (+ DeiT's) as
data, the init, the builders, and the mapping from torchvision's weights.

Deviations / options, each named again where it happens:
- ``drop_path`` (stochastic depth) is not in the ViT paper; DeiT trains with it (0.1). Its rate
  rises linearly over depth from 0 at the first block (DeiT's code) rather than from rate/L
  (Huang et al. Sec. 3's linear rule starts at p_1 = rate/L); 0 (the default) is the paper.
- The paper's Eq. 1 is a linear map of flattened patches; we use the equivalent strided conv
  (kernel = stride = patch size), as the official code does, so torchvision's weights load as is.
- The head is one linear layer (the paper's fine-tuning head, Sec. 3.1); pre-training's extra
  hidden layer ("MLP with one hidden layer at pre-training time") is not built.
- ``init="deit"`` (the train.py default) replaces the official code's init with DeiT's; see
  ``ViT._init_weights``.
- A distilled model's prediction in eval mode fuses its two heads as DeiT's Sec. 4 says (the
  mean of their softmax outputs), where DeiT's code averages their logits; see ``fuse_heads``.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

LN_EPS = 1e-6  # the official code's (flax) LayerNorm epsilon, and torchvision's
TRUNCATED_STD = 0.87962566103423978  # std of N(0, 1) truncated to [-2, 2] (flax's variance_scaling)


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth (Huang et al. 2016, Sec. 3) on a residual branch's output: each sample's
    branch is dropped with probability ``rate`` and the kept ones scaled by 1 / (1 - rate), so
    that no rescaling is needed at test time (the "inverted" form of the paper's Eq. 5)."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # (B, 1, 1)
    return x * mask / keep


class PatchEmbedding(nn.Module):
    """Eq. 1's x_p E: the image cut into P x P patches, each flattened and linearly projected to
    D dimensions. A conv with kernel = stride = P computes exactly that (see the module note)."""

    def __init__(self, patch_size: int, width: int, in_channels: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W)
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"a {h}x{w} input does not split into {self.patch_size}x{self.patch_size} "
                             f"patches: use a side divisible by the patch size")
        x = self.proj(x)  # (B, D, H/P, W/P)
        return x.flatten(2).transpose(1, 2)  # (B, N, D), N = HW / P^2, patches in raster order


class SelfAttention(nn.Module):
    """Multi-head self-attention (Appendix A, Eqs. 5-8): q, k, v from one linear map of the
    tokens, softmax(q k^T / sqrt(D_h)) v per head, the heads concatenated and projected."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"{heads} heads do not divide the width {width}: D_h = D / k must be whole")
        self.heads, self.head_dim = heads, width // heads  # Appendix A: D_h = D / k
        self.qkv = nn.Linear(width, 3 * width)  # Eq. 5's U_qkv, [q; k; v] stacked by rows
        self.proj = nn.Linear(width, width)  # Eq. 8's U_msa
        # Appendix B.1: dropout "after every dense layer except for the qkv-projections".
        self.dropout = nn.Dropout(dropout)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, d = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.heads, self.head_dim)  # (B, T, 3, h, D_h)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, T, D_h)
        return q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, D)
        b, t, d = x.shape
        q, k, v = self._qkv(x)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, T, D_h)  Eqs. 6-7, fused
        out = out.transpose(1, 2).reshape(b, t, d)  # (B, T, D)  heads concatenated (Eq. 8)
        return self.dropout(self.proj(out))

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 6's A = softmax(q k^T / sqrt(D_h)) written out, (B, h, T, T); for inspection only
        (the forward pass uses the fused kernel, which never forms A)."""
        q, k, _ = self._qkv(x)
        return (q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)).softmax(-1)


class MLP(nn.Module):
    """Sec. 3.1: "The MLP contains two layers with a GELU non-linearity"; dropout after each
    dense layer (Appendix B.1)."""

    def __init__(self, width: int, mlp_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, D)
        x = self.dropout(F.gelu(self.fc1(x)))  # (B, T, D_mlp)
        return self.dropout(self.fc2(x))  # (B, T, D)


class EncoderBlock(nn.Module):
    """One Transformer encoder layer (Fig. 1 right): "Layernorm (LN) is applied before every
    block, and residual connections after every block" (Sec. 3.1, Eqs. 2-3)."""

    def __init__(self, width: int, heads: int, mlp_dim: int, *, dropout: float = 0.0,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=LN_EPS)
        self.attn = SelfAttention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width, eps=LN_EPS)
        self.mlp = MLP(width, mlp_dim, dropout)
        self.drop_path = drop_path  # DEVIATION (DeiT): stochastic depth on both branches

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # z: (B, T, D)
        z = z + drop_path(self.attn(self.norm1(z)), self.drop_path, self.training)  # Eq. 2
        return z + drop_path(self.mlp(self.norm2(z)), self.drop_path, self.training)  # Eq. 3

    def extra_repr(self) -> str:
        return f"drop_path={self.drop_path}"


def interpolate_pos_embedding(pos: torch.Tensor, grid: tuple[int, int], prefix: int = 1) -> torch.Tensor:
    """Sec. 3.2: "we perform 2D interpolation of the pre-trained position embeddings, according
    to their location in the original image". ``pos`` (1, prefix + n*n, D) with a square n x n
    grid after the ``prefix`` tokens' (the class token's; DeiT's distillation token's too) ->
    (1, prefix + grid[0]*grid[1], D). Bicubic (the paper names no kernel; torchvision's
    interpolate_embeddings and timm default to bicubic too). The prefix tokens' embeddings have
    no location and are kept. The same grid returns ``pos`` itself: a no-op."""
    cls_pos, patch_pos = pos[:, :prefix], pos[:, prefix:]  # (1, prefix, D), (1, n*n, D)
    n = math.isqrt(patch_pos.shape[1])
    if n * n != patch_pos.shape[1]:
        raise ValueError(f"position embedding has {patch_pos.shape[1]} patch positions, not a square grid")
    if (n, n) == tuple(grid):
        return pos
    d = pos.shape[-1]
    patch_pos = patch_pos.reshape(1, n, n, d).permute(0, 3, 1, 2)  # (1, D, n, n)
    patch_pos = F.interpolate(patch_pos.float(), size=grid, mode="bicubic", align_corners=False)
    patch_pos = patch_pos.to(pos.dtype).permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], d)
    return torch.cat([cls_pos, patch_pos], dim=1)  # (1, prefix + N', D)


def fuse_heads(cls_logits: torch.Tensor, dist_logits: torch.Tensor) -> torch.Tensor:
    """DeiT Sec. 4, at test time: "the late fusion of these two separate heads, for which we add
    the softmax output by the two classifiers". Returned as log((softmax(a) + softmax(b)) / 2),
    whose softmax is exactly the mean of the two softmax outputs, so the evaluation, which reads
    logits, is unchanged. DeiT's code (and timm's) averages the logits instead; we follow the paper."""
    both = torch.logaddexp(cls_logits.float().log_softmax(1), dist_logits.float().log_softmax(1))
    return both - math.log(2)  # (B, num_classes)


class VitConfig(NamedTuple):
    layers: int  # L
    width: int  # hidden size D
    mlp_dim: int  # MLP size
    heads: int  # k


# Table 1 of the ViT paper ("Details of Vision Transformer model variants"), and Table 1 of
# DeiT for the small models it introduced (DeiT-B is ViT-B).
VIT_CONFIGS: dict[str, VitConfig] = {
    "Base": VitConfig(layers=12, width=768, mlp_dim=3072, heads=12),  # 86M
    "Large": VitConfig(layers=24, width=1024, mlp_dim=4096, heads=16),  # 307M
    "Huge": VitConfig(layers=32, width=1280, mlp_dim=5120, heads=16),  # 632M
    "Tiny": VitConfig(layers=12, width=192, mlp_dim=768, heads=3),  # DeiT-Ti, 5M
    "Small": VitConfig(layers=12, width=384, mlp_dim=1536, heads=6),  # DeiT-S, 22M
}

# "jax": the official code (google-research/vision_transformer, models.py), which torchvision's
# port follows; "deit": DeiT's (timm's VisionTransformer of 2020). See ViT._init_weights.
INITS = ("jax", "deit")


class ViT(nn.Module):
    """The Vision Transformer of Sec. 3.1 (Fig. 1, Eqs. 1-4)."""

    # Loaded at another resolution, this is interpolated to the model's grid (_load_from_state_dict);
    # common/pretrained.py lets its shape differ.
    resized_on_load = ("pos_embedding",)

    def __init__(
        self,
        config: VitConfig,
        patch_size: int,
        *,
        num_classes: int = 1000,
        image_size: int = 224,
        dropout: float = 0.0,
        drop_path: float = 0.0,
        init: str = "jax",
        in_channels: int = 3,
        distilled: bool = False,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch_size}")
        if init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
        self.config, self.patch_size, self.image_size = config, patch_size, image_size
        d = config.width
        grid = image_size // patch_size
        self.patch_embed = PatchEmbedding(patch_size, d, in_channels)  # Eq. 1: E
        self.class_token = nn.Parameter(torch.zeros(1, 1, d))  # Eq. 1: x_class, "z_0^0 = x_class"
        # DeiT Sec. 4: "a new token, the distillation token", beside the class token; its output
        # learns the teacher's prediction through its own head (head_dist). Tokens before the patches:
        self.distilled, self.num_prefix_tokens = distilled, 2 if distilled else 1
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d)) if distilled else None
        # Eq. 1: E_pos, "standard learnable 1D position embeddings" (Sec. 3.1, Appendix D.4); one for
        # the distillation token too, as DeiT's code has it (num_patches + 2 positions).
        self.pos_embedding = nn.Parameter(torch.zeros(1, self.num_prefix_tokens + grid * grid, d))
        self.dropout = nn.Dropout(dropout)  # Appendix B.1: "directly after adding positional-"
        # DeiT's rule: drop_path rises linearly from 0 at the first block to the rate at the last.
        rates = torch.linspace(0, drop_path, config.layers, device="cpu").tolist()
        self.blocks = nn.ModuleList(
            EncoderBlock(d, config.heads, config.mlp_dim, dropout=dropout, drop_path=r) for r in rates
        )
        self.norm = nn.LayerNorm(d, eps=LN_EPS)  # Eq. 4: y = LN(z_L^0)
        self.head = nn.Linear(d, num_classes)  # Sec. 3.1: the classification head on y
        self.head_dist = nn.Linear(d, num_classes) if distilled else None  # DeiT Sec. 4
        self._init_weights(init)

    def _init_weights(self, init: str) -> None:
        """Explicit init; each choice names its source. The paper states none."""
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)  # both sources: LN starts as pure normalisation
                nn.init.zeros_(m.bias)
        if init == "deit":
            # DeiT (timm's VisionTransformer, 2020): trunc_normal_(std=0.02) for the class
            # token, the position embeddings and every linear layer (the head too), zero biases;
            # the patch conv keeps PyTorch's default init (kaiming-uniform, a = sqrt(5)). Its
            # truncation bounds are +-2 absolute, i.e. 100 std: in effect a plain N(0, 0.02).
            self.patch_embed.proj.reset_parameters()
            nn.init.trunc_normal_(self.class_token, std=0.02)
            if self.dist_token is not None:  # DeiT's code: as the class token
                nn.init.trunc_normal_(self.dist_token, std=0.02)
            nn.init.trunc_normal_(self.pos_embedding, std=0.02)
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)
            return
        # The official code (models.py of google-research/vision_transformer; torchvision's port
        # follows it): patch embedding LeCun normal, flax's form: a normal truncated at +-2 of
        # its std, that std raised by 1 / 0.8796 so the result has std sqrt(1 / fan_in)
        # (torchvision's trunc_normal_ bounds are +-2 absolute: a plain normal in effect), zero bias;
        conv = self.patch_embed.proj
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        std = math.sqrt(1 / fan_in) / TRUNCATED_STD
        nn.init.trunc_normal_(conv.weight, std=std, a=-2 * std, b=2 * std)
        nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.class_token)  # class token zeros (a distillation token too, as the class token);
        if self.dist_token is not None:
            nn.init.zeros_(self.dist_token)
        nn.init.normal_(self.pos_embedding, std=0.02)  # position embeddings N(0, 0.02);
        for block in self.blocks:
            # attention: Xavier-uniform kernels, zero biases; flax draws q, k and v as three
            # D x D kernels, so each third of the stacked qkv weight gets its own fan;
            for w in block.attn.qkv.weight.chunk(3, dim=0):
                nn.init.xavier_uniform_(w)
            nn.init.xavier_uniform_(block.attn.proj.weight)
            nn.init.zeros_(block.attn.qkv.bias)
            nn.init.zeros_(block.attn.proj.bias)
            # MLP: Xavier-uniform weights, biases N(0, 1e-6);
            for fc in (block.mlp.fc1, block.mlp.fc2):
                nn.init.xavier_uniform_(fc.weight)
                nn.init.normal_(fc.bias, std=1e-6)
        # head zero-initialised (weight and bias): the initial logits are 0, the loss ln(C); a
        # distillation head as the head.
        for head in (self.head, self.head_dist):
            if head is not None:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 1: z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos, then dropout (DeiT: the
        distillation token after the class token)."""
        # x: (B, 3, H, W)
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        patches = self.patch_embed(x)  # (B, N, D)
        prefix = [self.class_token] if self.dist_token is None else [self.class_token, self.dist_token]
        z = torch.cat([t.expand(patches.shape[0], -1, -1) for t in prefix] + [patches], dim=1)  # (B, prefix + N, D)
        # Sec. 3.2: another resolution, another grid: the embeddings interpolated in 2-D.
        return self.dropout(z + interpolate_pos_embedding(self.pos_embedding, grid, self.num_prefix_tokens))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        # x: (B, 3, H, W); T = 1 + HW / P^2 tokens (2 + HW / P^2 distilled)
        z = self.embed(x)  # (B, T, D)
        for block in self.blocks:
            z = block(z)  # (B, T, D)  Eqs. 2-3
        y = self.norm(z[:, 0])  # (B, D)  Eq. 4, the class token's output
        if self.head_dist is None:
            return self.head(y)  # (B, num_classes) logits
        # DeiT Sec. 4: in training each head has its own loss (common/distill.py); at test time
        # the two are fused.
        logits = self.head(y), self.head_dist(self.norm(z[:, 1]))  # (B, num_classes) each
        return logits if self.training else fuse_heads(*logits)

    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each block's attention weights A (Eq. 6), a list of L tensors (B, heads, T, T), rows
        summing to one; row 0 is what the class token attends to (the paper's Fig. 6, "attention
        rollout" of Appendix D.8, starts from these). Call under torch.no_grad() in eval mode."""
        maps = []
        z = self.embed(x)
        for block in self.blocks:
            maps.append(block.attn.weights(block.norm1(z)))  # (B, h, T, T)
            z = block(z)
        return maps

    def resize_pos_embedding(self, image_size: int) -> None:
        """Fine-tune at another resolution (Sec. 3.2): keep the patch size, interpolate the
        position embeddings once to the new grid and store them."""
        if image_size % self.patch_size:
            raise ValueError(f"image_size {image_size} is not divisible by the patch size {self.patch_size}")
        grid = image_size // self.patch_size
        with torch.no_grad():
            new = interpolate_pos_embedding(self.pos_embedding.data, (grid, grid), self.num_prefix_tokens)
        self.pos_embedding = nn.Parameter(new.clone())
        self.image_size = image_size

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        # Weights trained at another resolution (torchvision's at 224 into a 128 px model): their
        # position embeddings are interpolated to this model's grid as Sec. 3.2 does for
        # fine-tuning, instead of failing on the shape.
        key = prefix + "pos_embedding"
        if key in state_dict and state_dict[key].shape[1] != self.pos_embedding.shape[1]:
            grid = self.image_size // self.patch_size
            state_dict[key] = interpolate_pos_embedding(state_dict[key], (grid, grid), self.num_prefix_tokens)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _vit(config: str, default_patch: int, num_classes: int, *, patch_size: int = 0, width: int = 0,
         layers: int = 0, heads: int = 0, mlp_dim: int = 0, **kwargs) -> ViT:
    """Table 1's ``config`` with the builder's patch size; patch_size/width/layers/heads/mlp_dim
    (0 = the builder's) make other sizes, e.g. tiny models for tests (mlp_dim defaults to 4 x
    width, the table's ratio)."""
    base = VIT_CONFIGS[config]
    cfg = VitConfig(layers=layers or base.layers, width=width or base.width,
                    mlp_dim=mlp_dim or (4 * width if width else base.mlp_dim), heads=heads or base.heads)
    return ViT(cfg, patch_size or default_patch, num_classes=num_classes, **kwargs)


# Each builder: its Table 1 row and patch size ("ViT-L/16 means the Large variant with 16 x 16
# input patch size", Sec. 4.1).
VARIANTS: dict[str, tuple[str, int]] = {
    "vit_b_16": ("Base", 16),
    "vit_b_32": ("Base", 32),
    "vit_l_16": ("Large", 16),
    "vit_l_32": ("Large", 32),
    "vit_h_14": ("Huge", 14),
    "deit_tiny_16": ("Tiny", 16),
    "deit_small_16": ("Small", 16),
    "deit_tiny_distilled_16": ("Tiny", 16),  # DeiT Sec. 4: the same rows, with distilled=True
    "deit_small_distilled_16": ("Small", 16),
}
DISTILLED = ("deit_tiny_distilled_16", "deit_small_distilled_16")  # the builders with a distillation token


def vit_b_16(num_classes: int = 1000, **kwargs) -> ViT:
    """ViT-B/16 (Table 1: Base, 16x16 patches): 86M parameters."""
    return _vit(*VARIANTS["vit_b_16"], num_classes, **kwargs)


def vit_b_32(num_classes: int = 1000, **kwargs) -> ViT:
    """ViT-B/32 (Table 1: Base, 32x32 patches)."""
    return _vit(*VARIANTS["vit_b_32"], num_classes, **kwargs)


def vit_l_16(num_classes: int = 1000, **kwargs) -> ViT:
    """ViT-L/16 (Table 1: Large, 16x16 patches): 307M parameters."""
    return _vit(*VARIANTS["vit_l_16"], num_classes, **kwargs)


def vit_l_32(num_classes: int = 1000, **kwargs) -> ViT:
    """ViT-L/32 (Table 1: Large, 32x32 patches)."""
    return _vit(*VARIANTS["vit_l_32"], num_classes, **kwargs)


def vit_h_14(num_classes: int = 1000, **kwargs) -> ViT:
    """ViT-H/14 (Table 1: Huge, 14x14 patches): 632M parameters."""
    return _vit(*VARIANTS["vit_h_14"], num_classes, **kwargs)


def deit_tiny_16(num_classes: int = 1000, **kwargs) -> ViT:
    """DeiT-Ti (DeiT Table 1: D 192, 3 heads, 12 layers, 16x16 patches): 5M parameters."""
    return _vit(*VARIANTS["deit_tiny_16"], num_classes, **kwargs)


def deit_small_16(num_classes: int = 1000, **kwargs) -> ViT:
    """DeiT-S (DeiT Table 1: D 384, 6 heads, 12 layers, 16x16 patches): 22M parameters."""
    return _vit(*VARIANTS["deit_small_16"], num_classes, **kwargs)


def deit_tiny_distilled_16(num_classes: int = 1000, **kwargs) -> ViT:
    """DeiT-Ti with the distillation token and head (DeiT Sec. 4, "DeiT-Ti⚗"): Table 1's 5M, plus
    one token, its position and a head."""
    return _vit(*VARIANTS["deit_tiny_distilled_16"], num_classes, distilled=True, **kwargs)


def deit_small_distilled_16(num_classes: int = 1000, **kwargs) -> ViT:
    """DeiT-S with the distillation token and head (DeiT Sec. 4, "DeiT-S⚗"): Table 1's 22M, plus
    one token, its position and a head."""
    return _vit(*VARIANTS["deit_small_distilled_16"], num_classes, distilled=True, **kwargs)


# Builder by name, so train.py can pick one with a string constant (ARCH = "deit_tiny_16").
MODELS: dict[str, Callable[..., ViT]] = {
    "vit_b_16": vit_b_16,
    "vit_b_32": vit_b_32,
    "vit_l_16": vit_l_16,
    "vit_l_32": vit_l_32,
    "vit_h_14": vit_h_14,
    "deit_tiny_16": deit_tiny_16,
    "deit_small_16": deit_small_16,
    "deit_tiny_distilled_16": deit_tiny_distilled_16,
    "deit_small_distilled_16": deit_small_distilled_16,
}

# Builders here whose architecture equals a torchvision one (same shapes at default options),
# with the constant of vit/train.py its weights assume: the builder's patch size (common/pretrained.py
# refuses another before the download, with a line saying which). Any IMAGE_DIM the patch divides
# works: the 224 px position embeddings are interpolated to the model's grid (Sec. 3.2).
TORCHVISION: dict[str, tuple[str, dict[str, int]]] = {
    name: (name, {"PATCH_SIZE": VARIANTS[name][1]})
    for name in ("vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14")
}

# torchvision.models.vision_transformer's names -> ours, per encoder layer (after the prefix
# "encoder.layers.encoder_layer_{i}."). Its nn.MultiheadAttention packs q, k, v by rows in
# in_proj_weight (3D, D), heads contiguous within each: our qkv layout, so no reshape.
_TV_LAYER = {
    "ln_1": "norm1",
    "self_attention.in_proj_weight": "attn.qkv.weight",
    "self_attention.in_proj_bias": "attn.qkv.bias",
    "self_attention.out_proj": "attn.proj",
    "ln_2": "norm2",
    "mlp.0": "mlp.fc1",  # mlp.1 is its GELU, mlp.2 and mlp.4 its dropouts
    "mlp.3": "mlp.fc2",
}
_TV_TOP = {
    "class_token": "class_token",
    "conv_proj": "patch_embed.proj",
    "encoder.pos_embedding": "pos_embedding",
    "encoder.ln": "norm",
    "heads.head": "head",
}


def from_torchvision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's VisionTransformer state_dict -> ours (names renamed; no tensor reshaped)."""
    out: dict[str, torch.Tensor] = {}
    prefix = "encoder.layers.encoder_layer_"
    for key, value in state.items():
        if key.startswith(prefix):
            index, rest = key[len(prefix):].split(".", 1)
            table, ours = _TV_LAYER, f"blocks.{index}."
        else:
            rest, table, ours = key, _TV_TOP, ""
        for theirs, mine in table.items():
            if rest == theirs or rest.startswith(theirs + "."):
                out[ours + mine + rest[len(theirs):]] = value
                break
        else:
            raise KeyError(f"torchvision key {key!r} has no counterpart here (a representation layer "
                           f"'heads.pre_logits' is not built: Sec. 3.1's fine-tuning head only)")
    return out
