"""The challenge's bird-or-bicycle dataset (version 0.0.4): download, verify, load.
More: docs/data.md, "llrnet.data.bird_or_bicycle"."""

from __future__ import annotations

from llrnet.data.bird_or_bicycle.dataset import BirdOrBicycle, evaluation_loader
from llrnet.data.bird_or_bicycle.download import DEFAULT_ROOT, DownloadReport, download
from llrnet.data.bird_or_bicycle.extras import ExtrasRule, select_extras
from llrnet.data.bird_or_bicycle.sources import CLASSES, VERSION, Sources
from llrnet.data.bird_or_bicycle.verify import VerifyReport, verify

__all__ = [
    "CLASSES",
    "DEFAULT_ROOT",
    "VERSION",
    "BirdOrBicycle",
    "DownloadReport",
    "ExtrasRule",
    "Sources",
    "VerifyReport",
    "download",
    "evaluation_loader",
    "select_extras",
    "verify",
]
