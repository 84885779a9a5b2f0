"""TF-Hub import without TensorFlow: read checkpoints and graphs, convert, verify.

* :func:`read_checkpoint` / :class:`CheckpointReader`: TF tensor bundles (V2).
* :func:`read_saved_model`: meta-graphs, tags, signatures, ops of ``saved_model.pb``.
* :func:`open_module`: a module folder or published ``.tar.gz`` (sha256, safe extraction).
* :func:`open_source`: also a handle or URL, fetched into tensorflow_hub's cache layout.
* :func:`inspect_hub`, :func:`import_hub`: the ``llrnet inspect-hub`` / ``import-hub`` commands.
* :func:`load_pretrained`: a released model by name (``create_model(..., pretrained=True)``).
* :func:`write_checkpoint`: a pure-Python bundle writer (tests, benchmarks).
"""

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
