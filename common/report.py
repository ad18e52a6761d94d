"""Model reports: a layer table, parameters, multiply-adds and memory of any builder, on ``meta``.

    python -m common.report resnet50 --size 224 --batch 128      # one model, layer by layer
    python -m common.report resnet50 --depth 2                   # ... blocks instead of leaves
    python -m common.report                                      # every model: one table
    python -m common.report --readme common/README.md                # ... written between the markers

Everything is measured on the ``meta`` device: shapes only, no weights, no activations, so ViT-H
and VGG-19 at any batch cost nothing. Multiply-adds come from torch.utils.flop_counter (2 FLOPs
per multiply-add of a convolution or matmul; BN, activations, pooling and additions count 0),
per module from its per-module counts. Every ``*/model.py`` with a ``MODELS`` dict is found by
itself, so a new architecture folder appears here without a change.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from common import errors, registry
from common.registry import paper

Builder = Callable[..., nn.Module]

# Input side at which each paper counts its cost: AlexNet's 227 (its "224" is an erratum), else 224.
NATIVE_SIZE: dict[str, int] = {"alexnet": 227}
DEFAULT_SIZE = 224
MARKERS = ("<!-- models:begin -->", "<!-- models:end -->")


# ----------------------------------------------------------------------------- the models

def discover() -> dict[str, dict[str, Builder]]:
    """{folder: its model.py's MODELS} (common.registry finds them)."""
    return registry.models()


def find(name: str, models: dict[str, dict[str, Builder]] | None = None) -> tuple[str, Builder]:
    """(folder, builder) of a builder name; a name that no MODELS holds is refused in one line."""
    models = discover() if models is None else models
    for folder, builders in models.items():
        if name in builders:
            return folder, builders[name]
    known = ", ".join(n for b in models.values() for n in b)
    raise SystemExit(f"error: no model named {name!r}; choose one of: {known}")


def native_size(folder: str) -> int:
    return NATIVE_SIZE.get(folder, DEFAULT_SIZE)


# ----------------------------------------------------------------------------- one model

@dataclass
class Row:
    """One line of the layer table: a module, what it outputs for one image, what it costs."""

    name: str
    kind: str
    shape: tuple[int, ...]  # one image's output (the first tensor the module returned); () = not run
    params: int
    macs: float  # per image
    act_bytes: int = 0  # what its forward outputs take for the whole batch


@dataclass
class Report:
    name: str
    size: int
    batch: int
    rows: list[Row] = field(default_factory=list)
    params: int = 0
    macs: float = 0.0  # per image
    act_bytes: int = 0  # the batch's activations, an estimate (see measure)
    dtype_bytes: int = 2

    @property
    def param_bytes(self) -> int:  # the weights in fp32: autocast keeps the master copy in fp32
        return 4 * self.params


def measure(builder: Builder, size: int = DEFAULT_SIZE, batch: int = 1, *, name: str = "model",
            depth: int = 0, num_classes: int = 1000, dtype: torch.dtype = torch.bfloat16,
            **kwargs: object) -> Report:
    """Build on ``meta``, run one forward of (batch, 3, size, size), and tabulate it.

    Rows are the leaf modules (``depth=0``), or the modules ``depth`` names deep (``depth=1``:
    the model's children, ``depth=2``: theirs), each summing what lies inside. Parameters a
    module holds itself beside its children (a ViT's class token) get a row of their own, so the
    rows always sum to the total.

    Activation memory, an estimate of what a training forward keeps for the backward pass: the
    output of every leaf module call, at ``dtype``'s size (bf16 autocast: 2 bytes), in-place
    modules (ReLU(inplace=True)) skipped since they write over their input. Not counted:
    functional ops between modules (additions, reshapes, attention's softmax in a functional
    call), nor what an op saves besides its output (a BN's statistics).
    """
    with torch.device("meta"):
        model = builder(num_classes=num_classes, **kwargs)
    model.train()
    names = {m: n for n, m in model.named_modules()}
    leaves = {m for m in model.modules() if not list(m.children())}
    shapes: dict[str, tuple[int, ...]] = {}
    acts: dict[str, int] = {}
    order: list[str] = []
    per_elem = torch.empty((), dtype=dtype).element_size()

    def hook(module: nn.Module, inputs: object, output: object) -> None:
        n = names[module]
        out = _first_tensor(output)
        if n not in shapes:
            order.append(n)
        shapes[n] = tuple(out.shape[1:]) if out is not None else ()
        if module in leaves and out is not None and not getattr(module, "inplace", False):
            acts[n] = acts.get(n, 0) + out.numel() * per_elem

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(batch, 3, size, size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    flops = counter.get_flop_counts()
    root = type(model).__name__
    module_flops = {n: sum(flops.get(f"{root}.{n}" if n else root, {}).values()) for n in names.values()}

    def macs_of(module: nn.Module) -> float:  # a container never called (a ModuleList): its children's
        n = names[module]
        return module_flops[n] if n in shapes else sum(macs_of(c) for c in module.children())

    report = Report(name=name, size=size, batch=batch, dtype_bytes=per_elem,
                    params=sum(p.numel() for p in model.parameters()),
                    macs=counter.get_total_flops() / 2 / batch, act_bytes=sum(acts.values()))
    rows = _row_modules(model, depth)
    for n, module, own_only in sorted(rows, key=lambda r: _position(r[0], order)):
        ps = module.parameters(recurse=not own_only)
        counted = not own_only or module in leaves  # a row of parameters only: no output of its own
        inside = [k for k in acts if _within(k, n)] if counted else []
        report.rows.append(Row(
            name=(n or "(model)") + (" (own)" if own_only and list(module.children()) else ""),
            kind=type(module).__name__, shape=shapes.get(n, ()) if counted else (),
            params=sum(p.numel() for p in ps),
            macs=macs_of(module) / 2 / batch if counted else 0.0,
            act_bytes=sum(acts[k] for k in inside)))
    return report


def _first_tensor(output: object) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for o in output:
            t = _first_tensor(o)
            if t is not None:
                return t
    return None


def _within(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def _position(name: str, order: list[str]) -> tuple[int, str]:
    """Rows in the order the forward first reached them; modules that never ran come last."""
    for i, n in enumerate(order):
        if _within(n, name):
            return i, name
    return len(order), name


def _row_modules(model: nn.Module, depth: int) -> list[tuple[str, nn.Module, bool]]:
    """(name, module, counts only its own parameters) for every row of the table."""
    rows = []
    for n, m in model.named_modules():
        level = 0 if n == "" else n.count(".") + 1
        leaf = not list(m.children())
        if (depth == 0 and leaf) or (depth > 0 and level == depth) or (depth > 0 and leaf and level < depth):
            rows.append((n, m, leaf))
        elif list(m.parameters(recurse=False)) and (depth == 0 or level < depth):
            rows.append((n, m, True))  # parameters held beside children, e.g. a class token
    return rows


# ----------------------------------------------------------------------------- printing

def human(x: float, unit: str = "") -> str:
    """1234567 -> '1.23 M' (k, M, G, T)."""
    for div, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.2f} {prefix}{unit}"
    return f"{x:.0f} {unit}".rstrip()


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.1f} MiB"


def layer_table(report: Report) -> str:
    """The layer table and its totals, as plain text."""
    head = ("layer", "type", "output (one image)", "parameters", "MACs", "activations")
    lines = [(r.name, r.kind, " x ".join(map(str, r.shape)) if r.shape else "-",
              f"{r.params:,}", human(r.macs) if r.macs else "0", mib(r.act_bytes) if r.act_bytes else "-")
             for r in report.rows]
    lines.append(("total", "", "", f"{report.params:,}", human(report.macs), mib(report.act_bytes)))
    widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]
    fmt = lambda cells: "  ".join(c.ljust(w) if i < 3 else c.rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    rule = "-" * len(fmt(head))
    out = [fmt(head), rule, *map(fmt, lines[:-1]), rule, fmt(lines[-1]), ""]
    dtype = {2: "bf16", 4: "fp32"}.get(report.dtype_bytes, f"{report.dtype_bytes}-byte")
    out.append(f"{report.name} at {report.size} px: {report.params:,} parameters, "
               f"{human(report.macs)} multiply-adds per image")
    out.append(f"parameters: {mib(report.param_bytes)} in fp32 (weights only; SGD with momentum adds "
               f"the same twice again for gradients and its buffer)")
    out.append(f"activations: {mib(report.act_bytes)} for a batch of {report.batch} in {dtype} (an "
               f"estimate: every leaf module's forward output, kept for the backward pass; in-place "
               f"ops and functional ops between modules not counted)")
    return "\n".join(out)


@dataclass
class ModelLine:
    name: str
    folder: str
    paper: str
    year: int
    size: int
    params: int
    macs: float
    report: Report


def all_models(models: dict[str, dict[str, Builder]] | None = None) -> list[ModelLine]:
    """Every builder of every MODELS dict at 1000 classes and its paper's input size."""
    models = discover() if models is None else models
    out = []
    for folder, builders in models.items():
        for name, builder in builders.items():
            size = native_size(folder)
            r = measure(builder, size, name=name)
            title, year = paper(folder, name)
            out.append(ModelLine(name, folder, title, year, size, r.params, r.macs, r))
    return out


def models_markdown(lines: list[ModelLine]) -> str:
    """The README's table of every model (markdown)."""
    out = ["| model | folder | paper | year | parameters | MACs (input) |",
           "|---|---|---|---|--:|--:|"]
    for m in lines:
        out.append(f"| {m.name} | {m.folder}/ | {m.paper} | {m.year or '?'} | {m.params / 1e6:.2f} M | "
                   f"{m.macs / 1e9:.2f} G ({m.size} px) |")
    out.append("")
    out.append("Parameters at 1000 classes; multiply-adds of one image, counted by "
               "`torch.utils.flop_counter` on the meta device (convolutions and matmuls). "
               "Made by `python -m common.report --readme common/README.md`.")
    return "\n".join(out)


def rewrite_between(path: Path, text: str, markers: tuple[str, str] = MARKERS) -> bool:
    """Put ``text`` between the two marker lines of ``path`` (the rest untouched); return whether
    the file changed. Missing markers: SystemExit with one line saying what to add."""
    begin, end = markers
    old = path.read_text()
    i, j = old.find(begin), old.find(end)
    if i < 0 or j < i:
        raise SystemExit(f"error: {path} has no {begin} ... {end} pair; add those two lines where "
                         f"the table should go, then run this again")
    new = old[:i + len(begin)] + "\n" + text.strip("\n") + "\n" + old[j:]
    if new != old:
        path.write_text(new)
    return new != old


def size_message(builder: Builder, name: str, size: int, num_classes: int, e: Exception) -> str:
    """Why a model cannot take ``size`` px, and the fix: a patch model (ViT) needs a multiple of
    its patch size, which a larger size does not give; any other model is too small there."""
    with torch.device("meta"):
        patch = getattr(builder(num_classes=num_classes), "patch_size", 0)
    if patch and size % patch:
        lower, upper = size // patch * patch, (size // patch + 1) * patch
        return (f"error: {name} cannot take {size} px inputs: the size must be a multiple of its patch size "
                f"({patch}), e.g. --size {upper}" + (f" or {lower}" if lower else ""))
    return f"error: {name} cannot take {size} px inputs ({str(e).splitlines()[0]}); use a larger --size"


@errors.entry_point
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="a builder name (e.g. resnet50); none: every model")
    parser.add_argument("--size", type=int, default=0, help="input side, pixels (0: the paper's, 227 or 224)")
    parser.add_argument("--batch", type=int, default=1, help="batch for the activation memory")
    parser.add_argument("--classes", type=int, default=1000, help="classes of the last layer")
    parser.add_argument("--depth", type=int, default=0, help="0: leaf modules; 1, 2: blocks that deep")
    parser.add_argument("--readme", type=Path, help="write the all-models table between the markers "
                        f"{MARKERS[0]} and {MARKERS[1]} of this file")
    args = parser.parse_args(argv)
    if args.model:
        folder, builder = find(args.model)
        size = args.size or native_size(folder)
        try:
            r = measure(builder, size, args.batch, name=args.model, depth=args.depth, num_classes=args.classes)
        except (RuntimeError, ValueError) as e:
            raise SystemExit(size_message(builder, args.model, size, args.classes, e)) from None
        print(layer_table(r))
        return
    table = models_markdown(all_models())
    if args.readme:
        changed = rewrite_between(args.readme, table)
        print(f"{args.readme}: {'table rewritten' if changed else 'already up to date'}")
    else:
        print(table)


if __name__ == "__main__":
    main()
