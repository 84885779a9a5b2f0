"""DeepMind's released models by name: fetched, converted once, cached, loaded.
The releases are declared beside their builders (``llrnet.models.zoo.RELEASED``);
converted weights are cached once and later loaded offline.
More: docs/hub.md, "llrnet.hub.pretrained"."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llrnet.core.errors import InputError, RunError
from llrnet.hub.importer import import_hub
from llrnet.hub.remote.cache import is_cached, llrnet_cache
from llrnet.hub.remote.sources import from_handle
from llrnet.models import load_weights
from llrnet.models.zoo import released

logger = logging.getLogger(__name__)


def weights_path(name: str) -> Path:
    """Where the converted weights of ``name`` are cached."""
    return llrnet_cache() / "weights" / f"{name}.safetensors"


def cache_state(name: str) -> dict[str, Any]:
    """The handles of ``name`` and what of it is in the caches (nothing is fetched)."""
    entry = released(name)
    handles = [entry.handle] + ([entry.linear] if entry.linear else [])
    return {"name": name, "description": entry.description, "handles": handles,
            "modules_cached": [is_cached(from_handle(h)) for h in handles],
            "weights": str(weights_path(name)), "converted": weights_path(name).is_file()}


def fetch_pretrained(name: str, *, offline: bool | None = None, verify: bool = False,
                     max_download: int | str | None = None) -> Path:
    """Fetch and convert ``name`` if its weights are not cached yet; returns their path.

    ``offline`` None: ``$LLRNET_OFFLINE`` is "1". ``max_download``: cap on each
    module download (else ``$LLRNET_HUB_MAX_DOWNLOAD``, else 4 GiB).

    Raises:
        InputError: offline with an empty cache (what is missing is named), or a
            download that is not the module.
        RunError: the download kept failing.
    """
    entry = released(name)
    path = weights_path(name)
    if path.is_file():
        return path
    if offline is None:
        offline = os.environ.get("LLRNET_OFFLINE") == "1"
    missing = [h for h in (entry.handle, entry.linear) if h and not is_cached(from_handle(h))]
    what = (f"{name}: no converted weights at {path}, and the modules {', '.join(missing)} "
            "are not in the module cache")
    if offline and missing:
        raise InputError(f"{what} (offline); run `llrnet pretrained {name}` once with "
                         "network access")
    logger.info("converting %s from %s", name, entry.handle)
    try:
        import_hub(entry.handle, linear=entry.linear, architecture=entry.architecture or name,
                   out=path, verify=verify, offline=offline, max_download=max_download)
    except RunError as error:
        raise RunError(f"{what}, and fetching failed: {error}") from None
    return path


def load_pretrained(name: str, *, offline: bool | None = None,
                    device: str | torch.device = "cpu") -> nn.Module:
    """The released model ``name`` with DeepMind's weights (fetched and converted once)."""
    return load_weights(fetch_pretrained(name, offline=offline), device=device)
