"""Re-run ResNet's degradation experiment (Sec. 4.1, Fig. 4, Table 2): plain against residual nets.

    python resnet/claims.py                                   # plain-18/34, ResNet-18/34, 2 seeds each
    python resnet/claims.py --NUM_EPOCHS=40 --DATA_PATH=~/data/imagenette2-224

The paper trains plain-18/34 and ResNet-18/34 with otherwise identical settings: the 34-layer
plain net has higher training error than the 18-layer one throughout training (the degradation
problem), and with shortcuts the situation is reversed (ImageNet top-1 error, 10-crop: plain-18
27.94 %, plain-34 28.54 %, ResNet-18 27.88 %, ResNet-34 25.03 %). The ResNets use option A
shortcuts (zero-padding: exactly the plain nets' parameters, Sec. 4.1) and no zero-initialised
residual branch, so nothing but the shortcuts differs. Degradation is about training error: the
figure (plain_vs_residual.png, in this folder) shows training and validation error per epoch.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from any folder, no PYTHONPATH

from common import claims  # noqa: E402

# --- scale
IMAGE_DIM = 64  # training crop, pixels (the paper: 224)
WIDTH = 64  # channels of conv1 and conv2_x (64 = the paper's)
NUM_EPOCHS = 10  # the paper: about 120 (60 x 10^4 iterations of batch 256)
BATCH_SIZE = 128
SEEDS = 2  # runs per network (mean ± std)
# --- the comparison
SHALLOW = 18  # depths compared: plain/ResNet-18 ...
DEEP = 34  # ... against plain/ResNet-34
SHORTCUT = "A"  # Fig. 4's ResNets: zero-padding shortcuts, no extra parameters (B adds 1x1 projections)

# Nothing but the shortcuts differs: no zero-initialised residual branch (a head start the plain
# nets cannot have).
SAME_FOR_ALL = {"ZERO_INIT_RESIDUAL": False, "SAVE_BEST": False}


def main(argv: list[str] | None = None) -> list[str]:
    cfg = claims.configure(sys.modules[__name__], argv)
    session = claims.Session("resnet", cfg)
    scale = {k: cfg[k] for k in ("IMAGE_DIM", "WIDTH", "NUM_EPOCHS", "BATCH_SIZE")}
    planned = {}
    for kind in ("plain", "resnet"):
        for depth in (cfg["SHALLOW"], cfg["DEEP"]):
            arch = f"{kind}{depth}"
            shortcut = {"SHORTCUT": cfg["SHORTCUT"]} if kind == "resnet" else {}
            planned[arch] = {**scale, **SAME_FOR_ALL, "ARCH": arch, **shortcut}
    session.check(planned.values())
    results = {arch: session.runs(arch, constants) for arch, constants in planned.items()}
    claims.plot(results, ["train_error", "val_error"], session.figure("plain_vs_residual.png"),
                f"Fig. 4 re-run: plain vs residual (shortcut {cfg['SHORTCUT']}), {cfg['IMAGE_DIM']} px, "
                f"{cfg['NUM_EPOCHS']} epochs, {cfg['SEEDS']} seed(s)")
    return judge(results, cfg)


def judge(results: dict, cfg: dict) -> list[str]:
    """Fig. 4's three readings, on the final training error (augmented batches)."""
    s, d = cfg["SHALLOW"], cfg["DEEP"]
    err = {arch: claims.train_error(runs) for arch, runs in results.items()}

    def numbers(a: str, b: str) -> str:
        return (f"final training error {a} {claims.spread(err[a])}, {b} {claims.spread(err[b])}; val top-1 "
                f"{a} {claims.spread(claims.final(results[a]))}, {b} {claims.spread(claims.final(results[b]))}")

    return [
        claims.verdict(f"degradation: plain-{d} trains worse than plain-{s}", claims.above(err[f"plain{d}"],
                       err[f"plain{s}"]), numbers(f"plain{d}", f"plain{s}")),
        claims.verdict(f"shortcuts remove it: ResNet-{d} trains better than plain-{d}",
                       claims.above(err[f"plain{d}"], err[f"resnet{d}"]), numbers(f"resnet{d}", f"plain{d}")),
        claims.verdict(f"with shortcuts depth helps: ResNet-{d} trains better than ResNet-{s}",
                       claims.above(err[f"resnet{s}"], err[f"resnet{d}"]), numbers(f"resnet{d}", f"resnet{s}")),
    ]


if __name__ == "__main__":
    main()
