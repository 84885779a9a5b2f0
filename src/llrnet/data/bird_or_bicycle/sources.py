"""Where the bird-or-bicycle dataset (version 0.0.4) comes from, pinned.
More: docs/data.md, "llrnet.data.bird_or_bicycle.sources"."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from llrnet.core.errors import UsageError

#: Dataset version this package reproduces.
VERSION = "0.0.4"

#: Last commit of google/unrestricted-adversarial-examples (2020-04-25).
REPO_COMMIT = "7285875bfec2639be8e9867ea746407e061c653b"

#: Folder of ``{bird,bicycle}_image_ids.csv`` at :data:`REPO_COMMIT`.
DEFAULT_ID_LIST_BASE = (
    "https://raw.githubusercontent.com/google/unrestricted-adversarial-examples/"
    f"{REPO_COMMIT}/bird-or-bicycle/bird_or_bicycle/metadata/{VERSION}"
)

#: sha256 of each id list as stored at :data:`REPO_COMMIT`.
ID_LIST_SHA256: dict[str, str] = {
    "bird": "ca1f9febcaf2e61c33b42e8151f3a93e4d70d1124e201a5b1569c4895e7aa51d",
    "bicycle": "5e0fb85e1074c64ca17a64ba94878af010d654f1864c13f7d927aad598e453f9",
}

#: The OpenImages public bucket over HTTPS (no credentials); objects ``train/<id>.jpg``.
DEFAULT_IMAGE_BASE = "https://open-images-dataset.s3.amazonaws.com"

#: OpenImages V4 (2018_04) train box annotations, 14,610,230 rows.
DEFAULT_BOXES_URL = (
    "https://storage.googleapis.com/openimages/2018_04/train/train-annotations-bbox.csv"
)

ENV_ID_LIST_BASE = "LLRNET_BOB_ID_LIST_URL"
ENV_IMAGE_BASE = "LLRNET_BOB_IMAGE_URL"
ENV_BOXES_URL = "LLRNET_BOB_BOXES_URL"

#: Class names in label order: bicycle = 0, bird = 1 (alphabetical folder order).
CLASSES: tuple[str, str] = ("bicycle", "bird")

#: OpenImages label ids of the two classes.
LABEL_IDS: dict[str, str] = {"bird": "/m/015p6", "bicycle": "/m/0199g"}

#: Images per class in each split.
SPLIT_SIZES: dict[str, int] = {"test": 125, "train": 125, "extras": 13_750}
SPLITS: tuple[str, ...] = ("train", "test", "extras")


def _pick(explicit: str | None, env: str, default: str) -> str:
    """The URL in force: ``explicit``, else ``$env``, else ``default``; checked
    up front, so a typo fails once here rather than once per image."""
    value = explicit if explicit is not None else os.environ.get(env) or default
    source = "the URL given" if explicit is not None else (
        f"${env}" if os.environ.get(env) else "the default URL")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"{source} is not an http(s) URL: {value!r} (expected e.g. "
                         "https://host/path)")
    return value.rstrip("/")


@dataclass(frozen=True)
class Sources:
    """Resolved URLs (and the id-list digests) for one download.

    ``Sources()`` reads the environment overrides at construction time.
    ``id_list_sha256`` exists so tests can serve their own lists; keep the
    default for real downloads.
    """

    id_list_base: str | None = None
    image_base: str | None = None
    boxes_url: str | None = None
    id_list_sha256: dict[str, str] = field(default_factory=lambda: dict(ID_LIST_SHA256))

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "id_list_base", _pick(self.id_list_base, ENV_ID_LIST_BASE, DEFAULT_ID_LIST_BASE)
        )
        object.__setattr__(
            self, "image_base", _pick(self.image_base, ENV_IMAGE_BASE, DEFAULT_IMAGE_BASE)
        )
        object.__setattr__(
            self, "boxes_url", _pick(self.boxes_url, ENV_BOXES_URL, DEFAULT_BOXES_URL)
        )

    def id_list_url(self, class_name: str) -> str:
        """URL of ``<class>_image_ids.csv``."""
        return f"{self.id_list_base}/{class_name}_image_ids.csv"

    def image_url(self, image_id: str) -> str:
        """URL of one OpenImages train image, ``<base>/train/<id>.jpg``."""
        return f"{self.image_base}/train/{image_id}.jpg"
