"""``llrnet export-hf``: a weights file as a Hugging Face Hub model folder."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``export-hf``."""
    export = subparsers.add_parser(
        "export-hf", help="write a weights file as a Hugging Face Hub model folder",
        description="Write OUT_DIR with model.safetensors (the weights file as it is), a "
        "timm-style config.json and a README.md model card, ready for "
        "`hf upload OWNER/REPO OUT_DIR`. Load it back with --weights hf-hub:OWNER/REPO.")
    export.add_argument("weights", help="a .safetensors file written by llrnet")
    export.add_argument("out_dir", help="a new or empty folder")
    export.add_argument("--results", default=None, metavar="RESULTS_JSON",
                        help="an `llrnet eval` results.json of this model: its table goes "
                        "into the card and its accuracies into the model-index")
    export.add_argument("--license", default="unknown",
                        help="the card's license identifier, e.g. apache-2.0 (default: unknown)")
    export.add_argument("--repo-id", default=None, metavar="OWNER/REPO",
                        help="the repository it will be uploaded to (fills the card's usage)")
    export.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from llrnet.hf import export_hf  # deferred: heavy (models, evaluation), per command

    exported = export_hf(args.weights, args.out_dir, results=args.results,
                         license=args.license, repo_id=args.repo_id)
    print(f"wrote {exported.folder}: {', '.join(exported.files)}")
    print(f"upload: hf upload {args.repo_id or 'OWNER/REPO'} {exported.folder}")
    return 0
