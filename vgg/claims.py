"""Re-run VGG's Table 3 claims (Sec. 4.1), from scratch and started from net A (Sec. 3.1).

    python vgg/claims.py                                      # A, A-LRN, B, C, D, E; 2 seeds; then from A
    python vgg/claims.py --ARCHS=vgg11,vgg16 --FROM_A=False --DATA_PATH=~/data/imagenette2-224

Table 3 (ILSVRC-2012 val, single scale, top-1 error) makes three claims. LRN does not help: A
29.6 %, A-LRN 29.7 %. Depth helps: A 29.6, B 28.7, D 27.0 (E saturates at 27.3). 1x1
convolutions are worse than 3x3 at the same depth: C 28.1 against D 27.0. The paper trained B-E
starting from the trained net A (its first four convs and three FC layers; Sec. 3.1); so does
the second stage here, with A itself restarted the same way as the control (its nets have then
had twice the epochs). Every net at WIDTH (1/8 by default: 2.0-2.2 M parameters at 10 classes)
with He's init: Glorot's, the Sec. 3.1 note's, leaves E at chance at this width (see the chapter).
Draws table3.png (from scratch) and table3_from_a.png (validation error per epoch) into this folder.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from any folder, no PYTHONPATH

from common import claims  # noqa: E402

# --- scale
IMAGE_DIM = 64  # training crop, pixels (a 2x2 map before the pool head; the paper: 224)
WIDTH = 0.125  # width multiplier (conv widths 8-64, FC 512)
NUM_EPOCHS = 10  # per stage (the paper: 74)
BATCH_SIZE = 64
LEARNING_RATE = 0.01  # peak of the one-cycle schedule (the paper's starting rate)
WARMUP_EPOCHS = 1.0
SEEDS = 2  # runs per configuration (mean ± std)
# --- the comparison
ARCHS = "vgg11,vgg11_lrn,vgg13,vgg16_1x1,vgg16,vgg19"  # Table 1's A, A-LRN, B, C, D, E (comma-separated)
FROM_A = True  # the second stage: B-E (and A, the control) started from the trained A of the same seed
INIT = "kaiming"  # He et al. 2015 (Glorot's leaves the deep nets at chance at this width)

NAMES = {"vgg11": "A", "vgg11_lrn": "A-LRN", "vgg13": "B", "vgg16_1x1": "C", "vgg16": "D", "vgg19": "E"}  # Table 1
SAME_FOR_ALL = {"SAVE_BEST": False}  # the recipe is the file's modern one, without batch norm


def main(argv: list[str] | None = None) -> list[str]:
    cfg = claims.configure(sys.modules[__name__], argv)
    session = claims.Session("vgg", cfg)
    archs = [a.strip() for a in cfg["ARCHS"].split(",") if a.strip()]
    scale = {k: cfg[k] for k in ("IMAGE_DIM", "WIDTH", "NUM_EPOCHS", "BATCH_SIZE", "LEARNING_RATE",
                                  "WARMUP_EPOCHS", "INIT")} | SAME_FOR_ALL
    session.check({**scale, "ARCH": arch} for arch in archs)  # (INIT_FROM: the files do not exist yet)
    scratch = {arch: session.runs(arch, {**scale, "ARCH": arch}) for arch in archs}
    title = f"Table 3 re-run: WIDTH={cfg['WIDTH']:g}, {cfg['IMAGE_DIM']} px, {cfg['NUM_EPOCHS']} epochs"
    claims.plot(_labelled(scratch), ["val_error"], session.figure("table3.png"), title + ", from scratch")
    lines = judge(scratch, "from scratch")
    if cfg["FROM_A"] and "vgg11" in scratch:
        a = scratch["vgg11"]  # each seed starts from its own A

        def from_a(i: int) -> dict:
            return {"INIT_FROM": str(a[i].path / "last.pt")}

        started = {arch: session.runs(f"from_a-{arch}", {**scale, "ARCH": arch}, per_seed=from_a)
                   for arch in archs if arch != "vgg11_lrn"}
        claims.plot(_labelled(started), ["val_error"], session.figure("table3_from_a.png"),
                    title + ", started from net A (A: restarted, the control)")
        lines += judge(started, "from net A")
    return lines


def _labelled(results: dict) -> dict:
    return {f"{NAMES.get(arch, arch)} {arch}": runs for arch, runs in results.items()}


def judge(results: dict, how: str) -> list[str]:
    """Table 3's claims on final val top-1, each where its nets were trained."""
    top1 = {arch: claims.final(runs) for arch, runs in results.items()}

    def numbers(*archs: str) -> str:
        return ", ".join(f"{NAMES.get(a, a)} {claims.spread(top1[a])}" for a in archs) + " val top-1"

    lines = []
    if {"vgg11", "vgg11_lrn"} <= set(top1):
        lines.append(claims.verdict(f"LRN does not help ({how})", not claims.above(top1["vgg11_lrn"], top1["vgg11"]),
                                    numbers("vgg11", "vgg11_lrn")))
    depth = [a for a in ("vgg11", "vgg13", "vgg16") if a in top1]  # E saturates (Sec. 4.1): not in the claim
    if len(depth) >= 2:
        steps = [claims.above(top1[deep], top1[shallow]) for shallow, deep in zip(depth, depth[1:])]
        lines.append(claims.verdict(f"depth helps, A < B < D ({how})", all(steps), numbers(*depth)))
    if {"vgg16_1x1", "vgg16"} <= set(top1):
        lines.append(claims.verdict(f"3x3 beats 1x1 at the same depth, D over C ({how})",
                                    claims.above(top1["vgg16"], top1["vgg16_1x1"]), numbers("vgg16_1x1", "vgg16")))
    return lines


if __name__ == "__main__":
    main()
