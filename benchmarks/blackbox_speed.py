"""Black-box attack speed: llrnet's Boundary and SPSA against foolbox 3 and torchattacks.

On the same model in one run: model evaluations (queries) per second of llrnet's
``Boundary`` against foolbox 3's ``BoundaryAttack`` and of llrnet's ``SPSA`` against
torchattacks' ``SPSA`` at equal probes per step, and for each the share of wall time
spent outside the model's forward (a wrapper times every forward). Runs are
interleaved (every attack once per round); each ratio is the median of the per-round
ratios. A second llrnet Boundary row runs the decision form through ``torch.compile``
(``compile_decisions = True``; compiled in the warm-up round, outside the timing),
a third queries the model as given (``fast_decisions = False``). The peers
come from a throwaway environment (``bash benchmarks/peer_env.sh VENV``), never from
llrnet's dependencies; without them only llrnet's rows run. Run with ``PYTHONPATH``
pointing at the checkout's ``src``:

    PYTHONPATH=src VENV/bin/python benchmarks/blackbox_speed.py --threads 1 --write
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from common import isa, machine_description, real_looking, write_section
from torch import Tensor, nn

from llrnet.attacks import SPSA, Boundary
from llrnet.data import two_class_digits
from llrnet.models import create_model

PLAIN = "llrnet Boundary, model as given"
"""The row of Boundary with ``fast_decisions = False``: the walk queries the model as given,
not in its decision form."""
COMPILED = "llrnet Boundary, compiled"
"""The row of Boundary with ``compile_decisions = True``."""


class ForwardTimer:
    """Counts the images ``model`` forwards and sums the wall time of its forwards, with
    hooks on the model itself (a compiled forward runs between them)."""

    def __init__(self, model: nn.Module) -> None:
        self.images = 0
        self.seconds = 0.0
        self._start = 0.0
        model.register_forward_pre_hook(self._before)
        model.register_forward_hook(self._after)

    def _before(self, module: nn.Module, args: tuple[Tensor, ...]) -> None:
        self._start = time.perf_counter()

    def _after(self, module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        self.seconds += time.perf_counter() - self._start
        self.images += int(args[0].shape[0])


@dataclass
class Run:
    """One attack's timed rounds: wall seconds, queries, seconds inside the forward."""

    walls: list[float] = field(default_factory=list)
    queries: int = 0
    forwards: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)  # the thread's CPU seconds

    @property
    def rates(self) -> list[float]:
        """Queries per second, round by round."""
        return [self.queries / wall for wall in self.walls]

    @property
    def rate(self) -> float:
        """Median queries per second."""
        return statistics.median(self.rates)

    @property
    def outside(self) -> float:
        """Median share of the wall time outside the model's forward."""
        return statistics.median(1.0 - f / w for f, w in zip(self.forwards, self.walls))

    def ratio(self, other: Run) -> float:
        """The median over rounds of this attack's queries/s over ``other``'s in the
        same round (the two ran back to back)."""
        return statistics.median(a / b for a, b in zip(self.rates, other.rates))

    def cpu_ratio(self, other: Run) -> float:
        """:meth:`ratio` on the thread's CPU time instead of wall time (one torch
        thread: the forwards run on the calling thread). On a crowded machine wall
        time mostly measures the scheduler; CPU time much less so."""
        return statistics.median((self.queries / a) / (other.queries / b)
                                 for a, b in zip(self.cpus, other.cpus))


def train(model: nn.Module, x: Tensor, y: Tensor, steps: int) -> nn.Module:
    """A few seeded SGD steps so the model separates the two classes (eval mode after)."""
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(steps):
        index = torch.randint(0, x.shape[0], (32,), generator=generator)
        loss = nn.functional.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def setup(name: str, images: int) -> tuple[nn.Module, Tensor, Tensor, Tensor, Tensor, str]:
    """Model, images to attack, labels, pool images and labels, and a description."""
    digits = two_class_digits("train")
    test = two_class_digits("test")
    torch.manual_seed(0)
    if name == "digits":
        model = train(create_model("digits_wrn", width=1), digits.images, digits.labels, 80)
        x, y, pool_x = test.images, test.labels, digits.images
        label = "digits_wrn (WRN-10-1), 1x28x28"
    else:
        model = create_model("resnet_v2_tiny_imagenet", num_classes=2)
        size = 64
        big = nn.functional.interpolate(digits.images, size=(size, size), mode="bilinear",
                                        align_corners=False).repeat(1, 3, 1, 1).clamp(0, 1)
        model = train(model, big, digits.labels, 60)
        x, y, pool_x = real_looking(len(test.images), size), test.labels, big
        label = "resnet_v2_tiny_imagenet (2 classes), 3x64x64"
    with torch.no_grad():
        correct = model(x).argmax(1) == y
        pool_ok = model(pool_x).argmax(1) == digits.labels
    x, y = x[correct][:images], y[correct][:images]
    return model, x, y, pool_x[pool_ok], digits.labels[pool_ok], label


def runners(model: nn.Module, x: Tensor, y: Tensor, pool: tuple[Tensor, Tensor],
            args: argparse.Namespace, peers: bool) -> tuple[ForwardTimer, dict[str, Callable]]:
    """The model's forward timer, and each attack as a call that runs it once."""
    timer = ForwardTimer(model.eval())
    calls: dict[str, Callable] = {}
    boundary = Boundary(threshold=1e-3, iterations=args.boundary_iterations)  # full walk
    calls["llrnet Boundary"] = lambda: boundary(model, x, y, seeds=0, pool=pool)
    compiled = Boundary(threshold=1e-3, iterations=args.boundary_iterations)
    compiled.compile_decisions = True
    calls[COMPILED] = lambda: compiled(model, x, y, seeds=0, pool=pool)
    # The same walk on the model as given, in calls of 64.
    plain = Boundary(threshold=1e-3, iterations=args.boundary_iterations)
    plain.fast_decisions = False
    calls[PLAIN] = lambda: plain(model, x, y, seeds=0, pool=pool)
    spsa = SPSA(eps=0.3, steps=args.spsa_steps, samples=64, early_stop_loss_threshold=None)
    calls["llrnet SPSA"] = lambda: spsa(model, x, y, seeds=0)
    if not peers:
        return timer, calls
    import foolbox
    import torchattacks

    # foolbox gets llrnet's starting points: the first pool image of the other class.
    others = [int(torch.nonzero(pool[1] != y[i])[0, 0]) for i in range(len(y))]
    starts = pool[0][others]
    fmodel = foolbox.PyTorchModel(model, bounds=(0, 1))
    fb_attack = foolbox.attacks.BoundaryAttack(steps=args.foolbox_steps)
    criterion = foolbox.criteria.Misclassification(y)
    calls["foolbox 3 BoundaryAttack"] = (
        lambda: fb_attack.run(fmodel, x, criterion, starting_points=starts))
    # 32 samples, two forwards each (x + delta v, x - delta v): llrnet's 64 probes.
    ta_attack = torchattacks.SPSA(model, eps=0.3, delta=0.01, lr=0.01,
                                  nb_iter=args.spsa_steps, nb_sample=32)
    calls["torchattacks SPSA"] = lambda: ta_attack(x, y)
    return timer, calls


def measure(timed: ForwardTimer, calls: dict[str, Callable], repeats: int) -> dict[str, Run]:
    """Interleaved rounds (every attack once per round) after one warm-up round."""
    runs = {name: Run() for name in calls}
    for round_ in range(repeats + 1):
        for name, call in calls.items():
            timed.images, timed.seconds = 0, 0.0
            start, cpu = time.perf_counter(), time.thread_time()
            call()
            wall = time.perf_counter() - start
            if round_:
                runs[name].cpus.append(time.thread_time() - cpu)
                runs[name].walls.append(wall)
                runs[name].forwards.append(timed.seconds)
                runs[name].queries = timed.images
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="digits,resnet64")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--boundary-iterations", type=int, default=20)
    parser.add_argument("--foolbox-steps", type=int, default=200)
    parser.add_argument("--spsa-steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import foolbox  # noqa: F401
        import torchattacks  # noqa: F401
        peers = True
    except ImportError as error:
        peers = False
        print(f"peers not importable ({error}); llrnet's rows only. Create them with "
              "`bash benchmarks/peer_env.sh VENV` and run with VENV/bin/python.")
    machine = machine_description()
    load = "/".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"{machine}\n{isa()}\nload average before the run {load}")
    rows: list[str] = []
    gains: list[str] = []
    for name in args.models.split(","):
        model, x, y, pool_x, pool_y, label = setup(name, args.images)
        runs = measure(*runners(model, x, y, (pool_x, pool_y), args, peers), args.repeats)
        for ours, peer in (("llrnet Boundary", "foolbox 3 BoundaryAttack"),
                           (COMPILED, "foolbox 3 BoundaryAttack"),
                           (PLAIN, "foolbox 3 BoundaryAttack"),
                           ("llrnet SPSA", "torchattacks SPSA")):
            mine = runs[ours]
            other = runs.get(peer)
            row = (f"| {label}, {len(y)} images | {ours} | {mine.queries} | {mine.rate:.0f} | "
                   f"{100 * mine.outside:.0f}% | ")
            if other is None:
                row += "- | - | - | - | - |"
            else:
                row += (f"{peer}: {other.queries} | {other.rate:.0f} | "
                        f"{100 * other.outside:.0f}% | **{mine.ratio(other):.2f}x** | "
                        f"**{mine.cpu_ratio(other):.2f}x** |")
            print(row)
            rows.append(row)
        fast, plain, built = runs["llrnet Boundary"], runs[PLAIN], runs[COMPILED]
        gain = (f"{label}: {fast.ratio(plain):.2f}x (wall), {fast.cpu_ratio(plain):.2f}x "
                f"(CPU time); compiled / decision form {built.ratio(fast):.2f}x (wall), "
                f"{built.cpu_ratio(fast):.2f}x (CPU time)")
        print(f"llrnet Boundary, decision form / model as given: {gain}")
        gains.append(gain)
    command = ("PYTHONPATH=src VENV/bin/python benchmarks/blackbox_speed.py "
               f"--models {args.models} --images {args.images} --boundary-iterations "
               f"{args.boundary_iterations} --foolbox-steps {args.foolbox_steps} --spsa-steps "
               f"{args.spsa_steps} --repeats {args.repeats} --threads {args.threads}")
    table = "\n".join([
        "| model | llrnet attack | queries | queries/s | outside forward | peer: queries | "
        "peer queries/s | peer outside forward | ratio (wall) | ratio (CPU time) |",
        "|---|---|---|---|---|---|---|---|---|---|", *rows])
    text = (f"## Black-box attack speed\n\nCommand: `{command}`\n\nMachine: {machine}; "
            f"{isa()}; load average before the run {load} (a shared machine: the rounds are "
            f"interleaved; queries/s and outside-forward shares are medians over "
            f"{args.repeats} rounds, each ratio the median of the per-round ratios, on wall "
            f"time and on the benchmark thread's CPU time).\n\n"
            f"{table}\n\nllrnet Boundary with the model in its decision form against the same "
            f"walk on the model as given (median per-round ratio): {'; '.join(gains)}.\n")
    print(text)
    if args.write:
        write_section("blackbox-speed", text)


if __name__ == "__main__":
    main()
