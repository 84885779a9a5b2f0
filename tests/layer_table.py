"""The layer table of llrnet: which unit may import which; docs/design.md shows it verbatim.

A unit (a subpackage or top-level module of ``llrnet``, or the package root) imports only
units of a lower layer or itself. ``tests/test_layers.py`` checks every import against it.
"""

from __future__ import annotations

LAYERS: dict[int, tuple[str, ...]] = {
    0: ("core",),
    1: ("llrnet",),
    2: ("models", "data"),
    3: ("attacks", "hub"),
    4: ("eval", "train"),
    5: ("pretrained", "inference", "hf"),
    6: ("demo",),
    7: ("cli",),
}

# What each unit is, in the order of the table (docs/design.md shows this too).
UNITS: dict[str, str] = {
    "core": "domain-free helpers: errors, registry, seeding, files, devices, HTTP, coercion",
    "llrnet": "the package root: `__version__` and the error names",
    "models": "architectures, heads, weights files, precision copies",
    "data": "datasets, loaders, the held-out images an evaluation scores",
    "attacks": "threat models (balls) and attacks",
    "hub": "TF-Hub import: formats -> recognition -> conversion, remote fetching",
    "eval": "suites, the resumable evaluation, its report",
    "train": "configuration, tasks, the training loop",
    "pretrained": "`create_model(..., pretrained=True)`: released weights by name",
    "inference": "scoring image files with a classifier",
    "hf": "`export_hf`: a weights file as a Hugging Face Hub model folder (config, card)",
    "demo": "`llrnet demo`: train, evaluate and report the demo models",
    "cli": "the `llrnet` command: argument parsing only",
}
