"""TF-Hub import without TensorFlow: read checkpoints and graphs, convert, verify.
More: docs/hub.md, "llrnet.hub"."""

from __future__ import annotations

from llrnet.hub.formats.bundle import CheckpointReader, read_checkpoint
from llrnet.hub.formats.module import open_module
from llrnet.hub.importer import import_hub, inspect_hub, open_source
from llrnet.hub.pretrained import load_pretrained

__all__ = [
    "CheckpointReader",
    "import_hub",
    "inspect_hub",
    "load_pretrained",
    "open_module",
    "open_source",
    "read_checkpoint",
]
