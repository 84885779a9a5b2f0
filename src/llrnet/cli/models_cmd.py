"""``llrnet models``, ``llrnet info`` and ``llrnet predict``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``models``, ``info`` and ``predict``."""
    models = subparsers.add_parser("models", help="list the registered models")
    models.set_defaults(func=_models)

    info = subparsers.add_parser("info", help="print a weights file's metadata")
    info.add_argument("weights", help="a .safetensors file written by llrnet, or "
                      "hf-hub:OWNER/REPO[@REVISION]")
    info.add_argument("--json", action="store_true", help="print the record as JSON")
    info.set_defaults(func=_info)

    predict = subparsers.add_parser("predict", help="score images: bird or bicycle")
    predict.add_argument("images", nargs="+", help="JPEG or PNG files")
    predict.add_argument("--weights", required=True, help="a bird-or-bicycle weights file, or "
                         "hf-hub:OWNER/REPO[@REVISION] (pip install 'llrnet[hf]')")
    predict.add_argument("--json", action="store_true", help="one JSON object per image")
    predict.add_argument("--batch-size", type=int, default=8)
    predict.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    predict.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                         help="fp32 (default), bf16 (a bf16 channels_last copy of the model: "
                         "several times faster on AMX-BF16 or AVX512-BF16 CPUs and recent "
                         "GPUs, logits within bf16 rounding) or auto (bf16 where the "
                         "hardware computes bf16 natively)")
    predict.add_argument("--compile", action="store_true",
                         help="run the model through torch.compile (compiles on the first "
                         "batch; eager with a warning where it cannot run)")
    predict.set_defaults(func=_predict)


def _models(args: argparse.Namespace) -> int:
    from llrnet.models import (  # deferred: heavy, per command
        list_models,
        model_arguments,
    )

    for name in list_models():
        arguments = ", ".join(f"{k}={v!r}" for k, v in model_arguments(name).items())
        print(f"{name}({arguments})")
    return 0


def _info(args: argparse.Namespace) -> int:
    from llrnet.models import read_metadata  # deferred: heavy, per command

    record = read_metadata(args.weights)
    if args.json:
        print(json.dumps(record, indent=2, sort_keys=True))
        return 0
    width = max(len(key) for key in record)
    for key in sorted(record):
        value = record[key]
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        print(f"{key:<{width}}  {text}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from llrnet.inference import (
        predict_images,  # deferred: heavy, per command
    )
    from llrnet.models import load_weights  # deferred: heavy, per command

    model = load_weights(args.weights, device=args.device)
    predictions, failures = predict_images(
        model, args.images, batch_size=args.batch_size, device=args.device,
        precision=args.precision, compile=args.compile,
    )
    for prediction in predictions:
        if args.json:
            print(json.dumps(prediction.as_dict()))
        else:
            print(f"{prediction.path}\t{prediction.label}\tP(bird)={prediction.bird_probability:.4f}"
                  f"\tconfidence={prediction.confidence:.4f}")
    for _path, reason in failures.items():
        print(f"llrnet predict: error: {reason}", file=sys.stderr)
    return 1 if failures else 0
