"""Independent attack libraries on the demo's models, under the threat model of each llrnet column.

On the four models of ``llrnet demo`` and the 108 two-class test digits (through the
model's challenge view, like ``llrnet.eval``), beside each column of the demo's report:
torchattacks' PGD and the authors' AutoAttack for ``pgd_linf``; torchattacks' PGD in
SPSA's L-inf ball for ``spsa_with_random_spatial``; foolbox 3's BoundaryAttack and
HopSkipJump (minimum L2, scored at Boundary's radius) and torchattacks' L2 PGD for
``boundary_with_random_spatial``, with and without the random spatial stage. The
spatial stage is the suite's own ``RandomSpatial`` with the per-image seeds the
evaluation derives. The white-box bound is llrnet's PGD in the same ball. The peers
live in a throwaway venv (``benchmarks/peer_env.sh``); a peer that is not installed
is skipped. Writes ``peer_check.md`` and ``peer_check.json`` to ``--out``::

    llrnet demo --out demo_out --seed 0
    bash benchmarks/peer_env.sh .venv-peers
    PYTHONPATH=src .venv-peers/bin/python benchmarks/peer_check.py --demo demo_out --out peers
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import isa, machine_description, write_section
from torch import Tensor, nn

from llrnet.attacks import PGD, Chain, RandomSpatial
from llrnet.eval.metrics import accuracy_at_coverage
from llrnet.eval.seeds import image_seeds

MODELS = ("standard", "pgd", "llr", "llr_adv")
SPSA_COLUMN = "spsa_with_random_spatial"
BOUNDARY_COLUMN = "boundary_with_random_spatial"
PGD_COLUMN = "pgd_linf"
PEERS = ("torchattacks", "foolbox", "pyautoattack")
SECTION = "peer_check"


@dataclass
class Setup:
    """The test images, the models' challenge views and the demo suite's threat models.

    ``x`` [N, 1, 28, 28] in [0, 1], ``y`` [N] (0/1), ``indices`` the dataset indices
    (the keys of the per-image seeds). ``llrnet`` holds each model's results.json
    records of the demo (empty in a dry run).
    """

    x: Tensor
    y: Tensor
    indices: list[int]
    models: dict[str, nn.Module]
    llrnet: dict[str, dict[str, Any]]
    spatial: RandomSpatial
    pgd_eps: float
    pgd_steps: int
    pgd_step_size: float
    spsa_eps: float
    boundary_radius: float
    seed: int
    dry_run: bool = False
    weights: dict[str, str] = field(default_factory=dict)


def tiny_model() -> nn.Module:
    """The dry runs' model: a linear two-class classifier on 28x28 digits (no training).

    The weight is the difference of the two classes' mean train images, scaled to unit
    L2 norm, the bias puts the boundary half-way between the means: logits [N, 2] =
    [0, w.x + b], so the class-1 logit is the signed L2 distance to the boundary (small
    enough that the softmax never saturates, so gradient attacks see a gradient).
    """
    from llrnet.data import two_class_digits

    train = two_class_digits("train")
    means = [train.images[train.labels == c].flatten(1).mean(0) for c in (0, 1)]
    w = means[1] - means[0]
    w = w / w.norm()
    b = -0.5 * float(w @ (means[0] + means[1]))
    linear = nn.Linear(28 * 28, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.stack([torch.zeros_like(w), w]))
        linear.bias.copy_(torch.tensor([0.0, b]))
    return nn.Sequential(nn.Flatten(), linear).eval()


def load_setup(demo: Path | None, models: Sequence[str], images: int, seed: int,
               dry_run: bool) -> Setup:
    """The demo's models (``<demo>/<model>/train/final.safetensors``), the first
    ``images`` test digits, and the threat models of the demo suite; in a dry run the
    :func:`tiny_model` instead."""
    from llrnet.data import two_class_digits
    from llrnet.demo import demo_suite
    from llrnet.models import challenge_view, load_weights

    data = two_class_digits("test")
    count = min(images, len(data.labels))
    suite = {entry.name: entry.attack for entry in demo_suite(quick=False).entries}
    spsa, boundary, pgd = suite[SPSA_COLUMN], suite[BOUNDARY_COLUMN], suite[PGD_COLUMN]
    assert isinstance(spsa, Chain) and isinstance(boundary, Chain) and isinstance(pgd, PGD)
    spatial = spsa.stages[0]
    assert isinstance(spatial, RandomSpatial)
    loaded: dict[str, nn.Module] = {}
    records: dict[str, dict[str, Any]] = {}
    weights: dict[str, str] = {}
    if dry_run:
        loaded["tiny"] = tiny_model()
    else:
        if demo is None:
            raise SystemExit("peer_check: --demo is required (or --dry-run)")
        for name in models:
            path = demo / name / "train" / "final.safetensors"
            if not path.is_file():
                raise SystemExit(f"peer_check: {path} not found; run `llrnet demo --out {demo}`")
            weights[name] = str(path)
            loaded[name] = challenge_view(load_weights(path)).eval()
    return Setup(
        x=data.images[:count].float(), y=data.labels[:count].long(),
        indices=list(range(count)), models=loaded, llrnet=records, spatial=spatial,
        pgd_eps=float(pgd.ball.eps), pgd_steps=pgd.steps, pgd_step_size=pgd.step_size,
        spsa_eps=float(spsa.stages[1].ball.eps),
        boundary_radius=float(boundary.stages[1].ball.eps), seed=seed, dry_run=dry_run,
        weights=weights,
    )


def read_llrnet(demo: Path, models: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each model's records of the demo's evaluation (``<demo>/<model>/eval/results.json``)."""
    records = {}
    for name in models:
        results = demo / name / "eval" / "results.json"
        if results.is_file():
            records[name] = json.loads(results.read_text())["attacks"]
    return records


def spatial_stage(setup: Setup, model: nn.Module, column: str) -> Tensor:
    """The images after ``column``'s random spatial stage, exactly as the evaluation
    draws them: image i uses ``image_seeds(seed, column, [i])`` (the chain hands its
    seeds to each stage)."""
    seeds = image_seeds(setup.seed, column, setup.indices)
    return setup.spatial(model, setup.x, setup.y, seeds=seeds)


def logits_of(model: nn.Module, x: Tensor, batch: int = 256) -> Tensor:
    """The model's logits [N, K] of ``x``, in batches, without gradients."""
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def score(model: nn.Module, x_adv: Tensor, y: Tensor) -> dict[str, float]:
    """``acc@80`` and ``acc@100`` (fractions) of the final images, with llrnet's metric."""
    logits = logits_of(model, x_adv).numpy()
    labels = y.numpy()
    return {"acc@80": accuracy_at_coverage(logits, labels, 0.8),
            "acc@100": accuracy_at_coverage(logits, labels, 1.0)}


def white_box(setup: Setup, model: nn.Module, x: Tensor, eps: float, norm: str, steps: int,
              restarts: int, key: str) -> Tensor:
    """llrnet's PGD (cross-entropy, step 2.5 eps / steps, random start) in the ball of
    radius ``eps`` around ``x``; per-image seeds keyed by ``key``."""
    if eps == 0:
        return x
    attack = PGD(eps, steps, 2.5 * eps / steps, norm=norm, restarts=restarts)
    return attack(model, x, setup.y, seeds=image_seeds(setup.seed, key, setup.indices))


class Counting(nn.Module):
    """``model`` counting the images it is given (a peer's queries)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.images = 0

    def forward(self, x: Tensor) -> Tensor:
        self.images += int(x.shape[0])
        return self.model(x)


def installed(peer: str) -> bool:
    """Whether the peer's package imports here (the throwaway venv has all three)."""
    return importlib.util.find_spec(peer) is not None


def torchattacks_pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int,
                     norm: str, seed: int) -> Tensor:
    """torchattacks' PGD (L-inf) or PGDL2, random start, step 2.5 eps / steps."""
    import torchattacks

    torch.manual_seed(seed)
    alpha = 2.5 * eps / steps
    cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    attack = cls(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    return attack(x, y).detach()


def autoattack(model: nn.Module, x: Tensor, y: Tensor, eps: float, version: str,
               seed: int, iterations: int = 100, restarts: int = 5) -> Tensor:
    """The authors' AutoAttack (pyautoattack), L-inf ``eps``. ``version`` "standard": on
    two classes APGD-CE, FAB-T (one target) and Square (APGD-T's loss needs 4 classes),
    the authors' budgets; "apgd-ce": that attack alone, ``restarts`` x ``iterations``."""
    import pyautoattack

    if version == "standard":
        adversary = pyautoattack.AutoAttack(model, norm="Linf", eps=eps, version="standard",
                                            seed=seed)
        adversary.attacks_to_run = ["apgd-ce", "fab-t", "square"]
        adversary.fab.n_target_classes = 1
        adversary.apgd_targeted.n_target_classes = 1
    else:
        adversary = pyautoattack.AutoAttack(model, norm="Linf", eps=eps, version="custom",
                                            attacks=["apgd-ce"], seed=seed)
        adversary.apgd.n_restarts, adversary.apgd.n_iter = restarts, iterations
    adversary.verbose = False
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=len(x))
    return torch.as_tensor(x_adv).detach()


def starting_points(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Per image, the nearest (L2) image of ``x`` that the model does not give its label
    (the image itself where the model already errs). foolbox's default start, blended
    uniform noise, finds nothing on the robust models."""
    predicted = logits_of(model, x).argmax(1)
    distance = torch.cdist(x.flatten(1), x.flatten(1))
    distance[predicted.reshape(1, -1) == y.reshape(-1, 1)] = float("inf")
    distance[predicted != y, predicted != y] = 0.0
    if not bool(torch.isfinite(distance.min(1).values).all()):
        raise SystemExit("peer_check: the model gives every image one class; no starting "
                         "point for the decision-based attacks")
    return x[distance.argmin(1)].clone()


def foolbox_min_l2(model: nn.Module, x: Tensor, y: Tensor, attack: str, steps: int,
                   seed: int) -> tuple[Tensor, Tensor]:
    """foolbox 3's ``BoundaryAttack`` or ``HopSkipJump`` (L2, minimum norm, no radius):
    the adversarial images [N, C, H, W] and their L2 distances [N] (0 for images the
    model already gets wrong, inf where the attack found nothing)."""
    import foolbox

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    fmodel = foolbox.PyTorchModel(model, bounds=(0.0, 1.0))
    if attack == "boundary":
        peer: Any = foolbox.attacks.BoundaryAttack(steps=steps)
    else:
        peer = foolbox.attacks.HopSkipJumpAttack(steps=steps)
    starts = starting_points(model, x, y)
    # Only the images the model gets right: for the others the start is the image itself,
    # from which foolbox's walks divide by a zero distance (NaN candidates).
    todo = logits_of(model, x).argmax(1) == y
    adversarial, distance = x.clone(), torch.zeros(len(x), dtype=x.dtype, device=x.device)
    if bool(todo.any()):
        _, found, success = peer(fmodel, x[todo], y[todo], epsilons=None,
                                 starting_points=starts[todo])
        found = found.detach()
        adversarial[todo] = found
        dist = (found - x[todo]).flatten(1).norm(dim=1)
        distance[todo] = torch.where(success.bool(), dist, torch.full_like(dist, float("inf")))
    return adversarial, distance


@dataclass
class Row:
    """One line of the table: an llrnet column, a peer in its threat model, the bound."""

    model: str
    column: str
    threat: str
    peer: str
    peer_score: dict[str, float] | None = None
    bound: dict[str, float] | None = None
    within: str = ""
    median_l2: float | None = None
    queries: float | None = None
    seconds: float = 0.0
    note: str = ""


def run_peer(row: Row, model: nn.Module, attack: Callable[..., Any], *args: Any) -> Any:
    """``attack(counting_model, *args)``; its wall time and queries per image go to ``row``."""
    counting = Counting(model).eval()
    start = time.perf_counter()
    result = attack(counting, *args)
    row.seconds = time.perf_counter() - start
    row.queries = counting.images / len(args[0])
    print(f"  {row.model} {row.column} ({row.threat}): {row.peer} {row.seconds:.1f} s",
          flush=True)
    return result


def check_model(setup: Setup, name: str, args: argparse.Namespace) -> list[Row]:
    """Every peer and bound on model ``name`` (see the module docstring)."""
    model = setup.models[name]
    x, y, seed = setup.x, setup.y, setup.seed
    rows: list[Row] = []
    have = {peer: installed(peer) and peer not in args.skip for peer in PEERS}

    def absent(row: Row, peer: str) -> bool:
        if have[peer]:
            return False
        row.note = "skipped" if peer in args.skip else "not installed"
        return True

    def bound(x0: Tensor, eps: float, norm: str, key: str) -> dict[str, float]:
        start = time.perf_counter()
        result = score(model, white_box(setup, model, x0, eps, norm, args.bound_steps,
                                        args.bound_restarts, key), y)
        print(f"  {name} bound {norm} {eps:g}: {time.perf_counter() - start:.1f} s", flush=True)
        return result

    # pgd_linf: white-box L-inf at the demo's eps and steps, no spatial stage.
    eps, steps = setup.pgd_eps, setup.pgd_steps
    threat = f"L-inf {eps:g}"
    linf_bound = bound(x, eps, "linf", f"peer_bound_{PGD_COLUMN}")
    row = Row(name, PGD_COLUMN, threat, f"torchattacks PGD-{steps}", bound=linf_bound)
    if not absent(row, "torchattacks"):
        adv = run_peer(row, model, torchattacks_pgd, x, y, eps, steps, "linf", seed)
        row.peer_score = score(model, adv, y)
    rows.append(row)
    title = ("AutoAttack (standard)" if args.aa_version == "standard" else
             f"AutoAttack APGD-CE {args.aa_restarts}x{args.aa_iters}")
    row = Row(name, PGD_COLUMN, threat, title, bound=linf_bound)
    if not absent(row, "pyautoattack"):
        adv = run_peer(row, model, autoattack, x, y, eps, args.aa_version, seed,
                       args.aa_iters, args.aa_restarts)
        row.peer_score = score(model, adv, y)
    rows.append(row)

    # spsa_with_random_spatial: SPSA's L-inf ball after the random spatial stage.
    x_spsa = spatial_stage(setup, model, SPSA_COLUMN)
    eps = setup.spsa_eps
    row = Row(name, SPSA_COLUMN, f"spatial, then L-inf {eps:g}",
              f"torchattacks PGD-{args.peer_steps}",
              bound=bound(x_spsa, eps, "linf", f"peer_bound_{SPSA_COLUMN}"))
    if not absent(row, "torchattacks"):
        adv = run_peer(row, model, torchattacks_pgd, x_spsa, y, eps, args.peer_steps, "linf",
                       seed)
        row.peer_score = score(model, adv, y)
    rows.append(row)

    # boundary_with_random_spatial: Boundary's L2 ball, with and without the spatial stage.
    radius = setup.boundary_radius
    x_rs = spatial_stage(setup, model, BOUNDARY_COLUMN)
    for start, spatial in ((x_rs, True), (x, False)):
        l2_bound = bound(start, radius, "l2", f"peer_bound_{BOUNDARY_COLUMN}_{spatial}")
        threat = ("spatial, then " if spatial else "") + f"L2 {radius:g}"
        row = Row(name, BOUNDARY_COLUMN, threat, f"torchattacks PGDL2-{args.peer_steps}",
                  bound=l2_bound)
        if not absent(row, "torchattacks"):
            adv = run_peer(row, model, torchattacks_pgd, start, y, radius, args.peer_steps,
                           "l2", seed)
            row.peer_score = score(model, adv, y)
        rows.append(row)
        few = slice(0, args.foolbox_images)
        start, y_few = start[few], y[few]
        correct = logits_of(model, start).argmax(1) == y_few
        for attack, steps, title in (("boundary", args.boundary_steps, "BoundaryAttack"),
                                     ("hsj", args.hsj_steps, "HopSkipJump")):
            row = Row(name, BOUNDARY_COLUMN, threat,
                      f"foolbox {title} ({steps} steps, first {len(start)} images)",
                      bound=l2_bound)
            rows.append(row)
            if absent(row, "foolbox"):
                continue
            try:
                adv, dist = run_peer(row, model, foolbox_min_l2, start, y_few, attack, steps,
                                     seed)
            except Exception as error:  # a peer's own failure is a cell, not the end of the run
                row.note = f"failed: {type(error).__name__}: {str(error).splitlines()[0]}"
                print(f"  {name} {row.peer}: {row.note}", flush=True)
                continue
            # Scored at the column's radius as llrnet's Boundary returns its result: a
            # point farther than the radius is projected onto that sphere (its class not
            # re-checked); where the peer found nothing, the starting image.
            found = torch.isfinite(dist).reshape(-1, 1, 1, 1)
            shrink = (radius / dist.clamp(min=radius)).reshape(-1, 1, 1, 1)
            final = torch.where(found, start + shrink * (adv - start), start)
            row.peer_score = score(model, final.clamp(0, 1), y_few)
            inside = correct & (dist <= radius)
            row.within = f"{int(inside.sum())}/{int(correct.sum())}"
            row.median_l2 = float(dist[correct].median()) if bool(correct.any()) else None
    return rows


def llrnet_cell(setup: Setup, model: str, column: str) -> str:
    """The demo's own number for ``column`` (``acc@80 / acc@100``, %), or ``-``."""
    record = setup.llrnet.get(model, {}).get(column)
    if record is None:
        return "-"
    return f"{100 * record['accuracy@80']:.1f} / {100 * record['accuracy@100']:.1f}"


def _pair(values: dict[str, float] | None) -> str:
    if values is None:
        return "-"
    return f"{100 * values['acc@80']:.1f} / {100 * values['acc@100']:.1f}"


def table(setup: Setup, rows: Sequence[Row]) -> str:
    """The side-by-side markdown table (accuracy % at 80% / 100% coverage)."""
    lines = [
        "| model | llrnet column | threat model | llrnet | peer attack | peer | white-box bound "
        "| within radius | median L2 | queries/image | peer s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        median = "-" if row.median_l2 is None else f"{row.median_l2:.2f}"
        queries = "-" if row.queries is None else f"{row.queries:,.0f}"
        peer = _pair(row.peer_score) if row.peer_score is not None else row.note or "-"
        lines.append(
            f"| {row.model} | {row.column} | {row.threat} | "
            f"{llrnet_cell(setup, row.model, row.column)} | {row.peer} | {peer} | "
            f"{_pair(row.bound)} | {row.within or '-'} | {median} | {queries} | "
            f"{row.seconds:.1f} |")
    return "\n".join(lines)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--demo", type=Path, help="the folder of `llrnet demo --out`")
    parser.add_argument("--out", type=Path, required=True, help="folder for the table and JSON")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--images", type=int, default=108, help="first test images")
    parser.add_argument("--seed", type=int, default=0, help="the demo evaluation's seed")
    parser.add_argument("--peer-steps", type=int, default=50,
                        help="torchattacks' PGD steps in the black-box columns' balls")
    parser.add_argument("--bound-steps", type=int, default=100, help="llrnet PGD steps")
    parser.add_argument("--bound-restarts", type=int, default=1, help="llrnet PGD restarts")
    parser.add_argument("--boundary-steps", type=int, default=1000,
                        help="foolbox BoundaryAttack steps")
    parser.add_argument("--hsj-steps", type=int, default=8, help="foolbox HopSkipJump steps")
    parser.add_argument("--aa-version", default="apgd-ce", choices=("standard", "apgd-ce"),
                        help="standard: the authors' full version (slow on 2 cores)")
    parser.add_argument("--aa-iters", type=int, default=50, help="APGD-CE iterations")
    parser.add_argument("--aa-restarts", type=int, default=2, help="APGD-CE restarts")
    parser.add_argument("--foolbox-images", type=int, default=30,
                        help="the decision-based attacks run on the first images only")
    parser.add_argument("--skip", default="", help="comma-separated peers not to run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--doc", action="store_true",
                        help="also write the table into docs/benchmarks.md")
    parser.add_argument("--dry-run", action="store_true",
                        help="seconds: a tiny linear model, 8 images, token budgets")
    args = parser.parse_args(argv)
    args.skip = [p for p in args.skip.split(",") if p]
    if args.dry_run:
        args.images = min(args.images, 8)
        args.peer_steps, args.bound_steps, args.bound_restarts = 5, 10, 1
        args.boundary_steps, args.hsj_steps, args.aa_version = 20, 1, "apgd-ce"
        args.aa_iters, args.aa_restarts, args.foolbox_images = 5, 1, 4
    return args


def start(args: argparse.Namespace) -> tuple[Setup, str]:
    """The threads set, the demo's models and images loaded (``args.models``, ``images``,
    ``seed``, ``dry_run``), and the machine's description, printed."""
    torch.set_num_threads(args.threads)
    setup = load_setup(args.demo, [m for m in args.models.split(",") if m], args.images,
                       args.seed, args.dry_run)
    machine = f"{machine_description()}; {isa()}"
    print(machine, flush=True)
    return setup, machine


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """How ``script`` was run, for the docs: ``python benchmarks/SCRIPT ARGS``."""
    return f"python benchmarks/{script} " + shlex.join(sys.argv[1:] if argv is None
                                                      else list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    setup, machine = start(args)
    rows: list[Row] = []
    started = time.perf_counter()
    for name in setup.models:
        rows += check_model(setup, name, args)
        print(f"{name}: done ({time.perf_counter() - started:.0f} s)", flush=True)
    if args.demo is not None and not args.dry_run:  # read last: the demo may still run
        setup.llrnet = read_llrnet(args.demo, list(setup.models))
    markdown = table(setup, rows)
    command = command_line("peer_check.py", argv)
    versions = {peer: _version(peer) for peer in PEERS}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peer_check.md").write_text(markdown + "\n")
    (args.out / "peer_check.json").write_text(json.dumps({
        "machine": machine, "command": command, "versions": versions,
        "images": len(setup.indices), "seed": setup.seed, "weights": setup.weights,
        "seconds": time.perf_counter() - started,
        "threat_models": {"pgd_eps": setup.pgd_eps, "pgd_steps": setup.pgd_steps,
                          "spsa_eps": setup.spsa_eps,
                          "boundary_radius": setup.boundary_radius},
        "llrnet": {m: {c: {"acc@80": r["accuracy@80"], "acc@100": r["accuracy@100"]}
                       for c, r in cols.items()} for m, cols in setup.llrnet.items()},
        "rows": [vars(row) for row in rows],
    }, indent=1) + "\n")
    print(markdown)
    if args.doc and not args.dry_run:
        write_section(SECTION, f"{machine}; peers {versions}.\n\n`{command}`\n\n{markdown}")
    return 0


def _version(peer: str) -> str | None:
    if not installed(peer):
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(peer)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
