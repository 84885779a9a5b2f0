"""Benchmark: read + verify a ResNet-152-sized TF checkpoint, and a full TF-Hub import.

    .venv/bin/python benchmarks/hub_read.py [--module DIR] [--write-docs]

1. Writes a synthetic checkpoint with ResNet-152 v2's variables (~230 MB of
   float32, llrnet's pure-Python bundle writer, byte-compatible with TF's).
2. Measures, in the same run: plain file read (MB/s), ``read_checkpoint`` with
   CRC32C by ``google-crc32c``, and without verification.
3. With ``--module DIR`` (a full-size module written by
   ``.venv-tf/bin/python scripts/make_hub_fixtures.py --resnet152 DIR``), times
   the whole ``import_hub`` (open, CRC, graph, mapping, completeness, save) and
   compares the converted model with TensorFlow's golden logits stored there.
   Goal: under 10 s.
4. With ``--module DIR`` again: the module packed as a ``.tar.gz`` and served
   on 127.0.0.1 behind a tfhub.dev -> Kaggle -> storage redirect chain, then
   ``import_hub(handle)`` with no ``--arch``: fetch (streamed, sha256), safe
   extraction into an empty module cache, CRC, conversion, save. Goal: under 15 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import torch
from common import best_times, machine_description

from llrnet.hub import import_hub, read_checkpoint
from llrnet.hub.formats.bundle_writer import write_checkpoint
from llrnet.models import create_model, load_weights

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SECTION = "## Hub import"


def resnet152_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """Random tensors with the names/shapes a ResNet-152 v2 module stores (HWIO convs)."""
    rng = np.random.default_rng(seed)
    model = create_model("resnet152_v2_imagenet")
    tensors = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        shape = tuple(value.shape)
        if len(shape) == 4:
            shape = (shape[2], shape[3], shape[1], shape[0])
        tensors["resnet_v2/" + key.replace(".", "/")] = rng.standard_normal(
            shape, dtype=np.float32)
    return tensors


def timed(function: Callable[[], object], repeat: int = 1) -> float:
    """The shortest of ``repeat`` calls (s), without a warm-up (the first read is cold)."""
    return best_times({"call": function}, repeat, warmup=False)["call"]


def plain_read(files: list[Path]) -> None:
    for path in files:
        with open(path, "rb") as handle:
            while handle.read(1 << 24):
                pass


HANDLE = "deepmind/local-linearity/imagenet/1"


def isa() -> str:
    """The vector extensions that matter here (AVX2, AVX-512, AMX), from /proc/cpuinfo."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "ISA unknown"
    wanted = {"avx2": "AVX2", "avx512f": "AVX-512", "amx_tile": "AMX"}
    return ", ".join(name for flag, name in wanted.items() if flag in flags) or "no AVX2"


def serve_archive(archive: Path) -> tuple[ThreadingHTTPServer, str]:
    """A local server: ``/<handle>`` -> ``/models/...`` -> ``/storage/...`` (the archive)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == f"/{HANDLE}":
                self._redirect("/models/deepmind/local-linearity/tensorFlow1/imagenet/1")
            elif path.startswith("/models/"):
                self._redirect("/storage/imagenet-1.tar.gz?signature=x")
            else:
                self.send_response(200)
                self.send_header("Content-Type", "application/x-tar")
                self.send_header("Content-Length", str(archive.stat().st_size))
                self.end_headers()
                with open(archive, "rb") as handle:
                    while block := handle.read(1 << 20):
                        self.wfile.write(block)

        def _redirect(self, location: str) -> None:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def fetch_and_convert(module: Path, tmp: Path) -> tuple[float, dict[str, object], float]:
    """Seconds for fetch + verify + convert + save from a local server; the record; MB."""
    from llrnet.hub.formats import archive as archive_module

    archive = tmp / "imagenet-1.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for path in sorted(module.rglob("*")):
            if path.name != "golden.npz":
                tar.add(path, arcname=path.relative_to(module).as_posix(), recursive=False)
    server, base = serve_archive(archive)
    saved = dict(os.environ)
    pinned = dict(archive_module.KNOWN_SHA256)
    os.environ.update(LLRNET_HUB_URL=base, LLRNET_CACHE=str(tmp / "cache"))
    os.environ.pop("TFHUB_CACHE_DIR", None)
    # the benchmark module is not the published one: no pinned hash for it
    archive_module.KNOWN_SHA256.clear()
    try:
        start = time.perf_counter()
        record = import_hub(HANDLE, out=tmp / "fetched.safetensors")
        seconds = time.perf_counter() - start
    finally:
        os.environ.clear()
        os.environ.update(saved)
        archive_module.KNOWN_SHA256.update(pinned)
        server.shutdown()
    return seconds, record, archive.stat().st_size / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", type=Path, default=None,
                        help="a full-size ResNet-152 module (see the module doc)")
    parser.add_argument("--write-docs", action="store_true",
                        help=f"replace the '{SECTION}' section of docs/benchmarks.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="llrnet-hub-bench-") as tmp:
        tensors = resnet152_tensors()
        prefix = Path(tmp) / "variables"
        files = write_checkpoint(prefix, tensors)
        del tensors
        size_mb = sum(p.stat().st_size for p in files) / 1e6
        plain_read(files)  # warm the page cache so every measurement reads from memory
        t_plain = timed(lambda: plain_read(files), repeat=3)
        rows.append(f"| plain file read (warm cache) | {t_plain:.2f} s | "
                    f"{size_mb / t_plain:.0f} MB/s | 1.00 |")

        def read(verify: bool) -> None:
            values = read_checkpoint(prefix, verify=verify)
            for array in values.values():  # touch every byte, as a conversion does
                float(array.reshape(-1)[-1])
                np.asarray(array).sum()

        cases = [("read_checkpoint, no CRC (verify=False)", False),
                 ("read_checkpoint + CRC32C, google-crc32c", True)]
        for label, verify in cases:
            seconds = timed(partial(read, verify), repeat=3)
            rows.append(f"| {label} | {seconds:.2f} s | {size_mb / seconds:.0f} MB/s | "
                        f"{t_plain / seconds:.2f} |")
        import_rows: list[str] = []
        if args.module is not None:
            out = Path(tmp) / "r152.safetensors"
            start = time.perf_counter()
            record = import_hub(args.module, architecture="resnet152_v2_imagenet", out=out)
            t_import = time.perf_counter() - start
            module_mb = sum(p.stat().st_size for p in (args.module / "variables").iterdir()) / 1e6
            import_rows.append(f"| full `import_hub` of a ResNet-152 v2 module ({module_mb:.0f} MB,"
                               f" CRC on, saved to safetensors) | {t_import:.2f} s |")
            golden_path = args.module.parent / "golden.npz"
            if not golden_path.is_file():
                golden_path = args.module / "golden.npz"
            if golden_path.is_file():
                with np.load(golden_path) as golden:
                    model = load_weights(out)
                    with torch.no_grad():
                        ours = model(torch.from_numpy(golden["images"]).permute(0, 3, 1, 2))
                    diff = float(np.abs(ours.numpy() - golden["logits"]).max())
                    scale = float(np.abs(golden["logits"]).max())
                    count = len(golden["images"])
                # Random weights through 50 residual units blow the logits up to ~1e8,
                # so the meaningful number is the difference relative to their size.
                import_rows.append(f"| max abs logit difference vs TensorFlow ({count} images, "
                                   f"64x64), relative to max abs logit {scale:.2g} | "
                                   f"{diff / scale:.2g} |")
            import_rows.append(f"| checks recorded | {'; '.join(record['checks'][:3])} |")
            t_fetch, fetched, archive_mb = fetch_and_convert(args.module, Path(tmp))
            import_rows.append(f"| fetch by handle from 127.0.0.1 (2 redirects: "
                               f"handle -> Kaggle -> storage, {archive_mb:.0f} MB archive) + "
                               f"sha256 + extraction + CRC + conversion (no --arch: "
                               f"{fetched['architecture']}) + save | {t_fetch:.2f} s |")
    lines = [
        SECTION, "",
        f"Command: `.venv/bin/python benchmarks/hub_read.py --module DIR --write-docs` "
        f"({machine_description()}; {isa()}; {platform.machine()}; the CPU was shared "
        "with other jobs, so times are "
        "upper bounds). DIR was written by `.venv-tf/bin/python scripts/make_hub_fixtures.py "
        "--resnet152 DIR`.", "",
        f"Synthetic ResNet-152 v2 checkpoint, {size_mb:.0f} MB (pure-Python writer):", "",
        "| what | time | throughput | vs plain read |", "|---|---|---|---|", *rows, "",
    ]
    if import_rows:
        lines += ["Full import (goals: import under 10 s, fetch + import under 15 s):", "",
                  "| what | result |", "|---|---|",
                  *import_rows, ""]
    text = "\n".join(lines)
    print(text)
    if args.write_docs:
        current = DOCS.read_text()
        if SECTION in current:
            head, _, rest = current.partition(SECTION)
            tail = rest.split("\n## ", 1)
            current = head + text + ("\n## " + tail[1] if len(tail) > 1 else "")
        else:
            current = current.rstrip("\n") + "\n\n" + text
        DOCS.write_text(current)


if __name__ == "__main__":
    main()
