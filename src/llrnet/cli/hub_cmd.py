"""``llrnet inspect-hub``, ``import-hub`` and ``pretrained``: TF-Hub modules without TensorFlow."""

from __future__ import annotations

import argparse
import json
from typing import Any

SOURCE_HELP = ("module folder, .tar.gz archive, handle (deepmind/llr-pretrain-adv/latents/1, "
               "fetched from $LLRNET_HUB_URL or https://tfhub.dev into the module cache), "
               "tfhub.dev or Kaggle Models URL")
MAX_DOWNLOAD_HELP = ("cap on a module download, e.g. 8G (default: $LLRNET_HUB_MAX_DOWNLOAD, "
                     "else 4G; a larger Content-Length is refused before reading)")


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``inspect-hub`` and ``import-hub``."""
    inspect = subparsers.add_parser(
        "inspect-hub", help="show a TF-Hub module's signatures, variables, ops and architecture")
    inspect.add_argument("path", help=SOURCE_HELP)
    inspect.add_argument("--json", action="store_true", help="print everything as JSON")
    inspect.add_argument("--no-verify", action="store_true",
                         help="skip the CRC32C checks of the checkpoint")
    inspect.add_argument("--sha256", default=None, help="expected sha256 of the archive")
    inspect.add_argument("--offline", action="store_true",
                         help="handles and URLs: use the module cache only, never download")
    inspect.add_argument("--max-download", default=None, metavar="SIZE", help=MAX_DOWNLOAD_HELP)
    inspect.set_defaults(func=_inspect)

    imp = subparsers.add_parser(
        "import-hub", help="convert a TF-Hub module into an llrnet weights file")
    imp.add_argument("path", help=SOURCE_HELP + " (the latents module for llr_pretrain_adv)")
    imp.add_argument("--linear", default=None,
                     help="the llr-pretrain-adv/linear module (same forms as PATH)")
    imp.add_argument("--arch", default=None,
                     help="target architecture (a registered model, see `llrnet models`), "
                     "e.g. llr_pretrain_adv; default: read from the module (a registered "
                     "name that matches it exactly, else its family with every argument)")
    imp.add_argument("--out", required=True, help="output .safetensors file")
    imp.add_argument("--verify", action="store_true",
                     help="compare with TensorFlow when available (else reported as skipped)")
    imp.add_argument("--tf-python", default=None,
                     help="a Python interpreter that has TensorFlow (default: this one, or "
                     "$LLRNET_TF_PYTHON)")
    imp.add_argument("--image-size", type=int, default=224, help="verification image size")
    imp.add_argument("--sha256", default=None, help="expected sha256 of the module archive")
    imp.add_argument("--no-verify-crc", action="store_true",
                     help="skip the CRC32C checks of the checkpoint")
    imp.add_argument("--offline", action="store_true",
                     help="handles and URLs: use the module cache only, never download")
    imp.add_argument("--max-download", default=None, metavar="SIZE", help=MAX_DOWNLOAD_HELP)
    imp.set_defaults(func=_import)

    pre = subparsers.add_parser(
        "pretrained", help="list DeepMind's released models and their cache state, or fetch "
        "and convert one")
    pre.add_argument("name", nargs="?", default=None,
                     help="a released model to fetch and convert (default: list them)")
    pre.add_argument("--offline", action="store_true", help="use the caches only")
    pre.add_argument("--verify", action="store_true",
                     help="compare the conversion with TensorFlow when available")
    pre.add_argument("--max-download", default=None, metavar="SIZE", help=MAX_DOWNLOAD_HELP)
    pre.set_defaults(func=_pretrained)


def _check_max_download(args: argparse.Namespace) -> None:
    """Refuse a bad ``--max-download`` before any work, even for a local module."""
    from llrnet.core.http import parse_size  # deferred: imports requests, per command

    if args.max_download is not None:
        parse_size(args.max_download, "--max-download")


def _inspect(args: argparse.Namespace) -> int:
    from llrnet.hub import inspect_hub  # deferred: heavy, per command

    _check_max_download(args)
    report = inspect_hub(args.path, verify=not args.no_verify, expected_sha256=args.sha256,
                         offline=args.offline, max_download=args.max_download)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True, default=str))
        return 0
    print(f"module   {report['path']}")
    print(f"sha256   {report['sha256']}" + ("  (checked)" if report["sha256_checked"] else ""))
    for meta in report["meta_graphs"]:
        tags = "{" + ", ".join(meta["tags"]) + "}"
        print(f"\nmeta-graph {tags}: {meta['nodes']} nodes")
        for key, sig in meta["signatures"].items():
            ins = ", ".join(f"{k}: {v['dtype']}{v['shape']}" for k, v in sig["inputs"].items())
            outs = ", ".join(f"{k}: {v['dtype']}{v['shape']}" for k, v in sig["outputs"].items())
            print(f"  signature {key!r}: ({ins}) -> ({outs})")
    variables = report["variables"]
    print(f"\nvariables: {len(variables)}, {report['total_bytes'] / 2**20:.2f} MiB")
    width = max((len(v["name"]) for v in variables), default=0)
    for v in variables:
        flag = "  partitioned" if v["partitioned"] else ""
        print(f"  {v['name']:<{width}}  {v['dtype']:<8} {v['shape']!s:<18} "
              f"{v['bytes']:>10}{flag}")
    print("\nops:")
    for op, count in report["op_histogram"].items():
        print(f"  {op:<24} {count}")
    print("\narchitecture:")
    for key, value in report["architecture"].items():
        print(f"  {key:<16} {value}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from llrnet.hub import import_hub  # deferred: heavy, per command

    _check_max_download(args)
    record = import_hub(args.path, architecture=args.arch, out=args.out, linear=args.linear,
                        verify=args.verify, verify_crc=not args.no_verify_crc,
                        expected_sha256=args.sha256, tf_python=args.tf_python,
                        image_size=args.image_size, offline=args.offline,
                        max_download=args.max_download)
    print(f"wrote {args.out} ({record['architecture']}, sha256 {record['sha256'][:16]}...)")
    for check in record["checks"]:
        print(f"  ok  {check}" if not check.startswith("tensorflow: skipped")
              else f"  --  {check}")
    return 0


def _pretrained(args: argparse.Namespace) -> int:
    from llrnet.hub.pretrained import cache_state, fetch_pretrained  # deferred: heavy
    from llrnet.models.zoo import RELEASED  # deferred: heavy, per command

    if args.name is None:
        for name in sorted(RELEASED):
            state = cache_state(name)
            modules = ", ".join(f"{h} ({'cached' if c else 'not cached'})"
                                for h, c in zip(state["handles"], state["modules_cached"]))
            converted = "converted" if state["converted"] else "not converted"
            print(f"{name:<24} {state['description']}\n{'':<24} {modules}; weights {converted}")
        return 0
    _check_max_download(args)
    path = fetch_pretrained(args.name, offline=args.offline, verify=args.verify,
                            max_download=args.max_download)
    print(f"{args.name}: {path}")
    return 0
