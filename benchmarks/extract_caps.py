"""Benchmark: the cost of the capped two-pass extraction and of the bounded download read.

    .venv/bin/python benchmarks/extract_caps.py [--mib 128] [--repeats 3] [--write-docs]

1. Packs ``--mib`` MiB of random bytes (incompressible, as float32 weights
   nearly are) and a small ``saved_model.pb`` into a ``.tar.gz``, then times,
   interleaved, best of ``--repeats``: a plain one-pass ``tarfile`` extraction
   with the ``"data"`` filter (what llrnet did before the caps) and
   ``llrnet.hub.formats.archive.extract_archive`` (header pass with the caps,
   then the capped extraction pass).
2. Serves the archive on 127.0.0.1 and times, the same way, reading the body
   with ``requests``' ``iter_content`` and with ``llrnet.core.http.read_body``
   (size cap, minimum rate, blocks as they arrive).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tarfile
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from common import best_times, isa, machine_description, write_section

from llrnet.core.http import RetryPolicy, TransferLimits, get, read_body
from llrnet.hub.formats.archive import extract_archive


def _archive(folder: Path, mib: int) -> Path:
    module = folder / "module"
    (module / "variables").mkdir(parents=True)
    (module / "saved_model.pb").write_bytes(b"\x08\x01" * 4096)
    with open(module / "variables" / "variables.data-00000-of-00001", "wb") as handle:
        for _ in range(mib):
            handle.write(os.urandom(1 << 20))
    path = folder / "module.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        archive.add(module, arcname=".")
    shutil.rmtree(module)
    return path


def _serve(body: bytes) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/module.tar.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = _archive(folder, args.mib)
        counter = [0]

        def target() -> Path:
            counter[0] += 1
            return folder / f"out{counter[0]}"

        def plain() -> None:
            out = target()
            with tarfile.open(path, "r:*") as archive:
                archive.extractall(out, filter="data")
            shutil.rmtree(out)

        def capped() -> None:
            out = target()
            extract_archive(path, out)
            shutil.rmtree(out)

        extraction = best_times({"plain": plain, "capped": capped}, args.repeats)
        server, url = _serve(path.read_bytes())
        session = requests.Session()
        policy = RetryPolicy(timeout=30.0, attempts=1)
        limits = TransferLimits(4 << 30)

        def iter_content() -> None:
            with session.get(url, stream=True, timeout=30.0) as response:
                for _ in response.iter_content(1 << 16):
                    pass

        def bounded() -> None:
            response, _ = get(session, url, policy)
            with response:
                read_body(response, limits, lambda block: None, policy=policy)

        reading = best_times({"iter_content": iter_content, "read_body": bounded},
                             args.repeats)
        server.shutdown()
        size = path.stat().st_size / 2**20
    text = (
        "## Bounded downloads and capped extraction\n\n"
        f"Command: `.venv/bin/python benchmarks/extract_caps.py --mib {args.mib} --repeats "
        f"{args.repeats} --write-docs` ({machine_description()}; {isa()}; the CPU was shared "
        "with "
        "other jobs: best of interleaved rounds).\n\n"
        f"A {size:.0f} MiB module archive (random bytes, as float32 weights nearly are):\n\n"
        "| what | time | vs before |\n|---|---|---|\n"
        f"| one-pass `tarfile` extraction, `\"data\"` filter (before) | "
        f"{extraction['plain']:.2f} s | 1.00 |\n"
        f"| `extract_archive`: header pass with the caps, then capped extraction | "
        f"{extraction['capped']:.2f} s | {extraction['capped'] / extraction['plain']:.2f} |\n"
        f"| body read from 127.0.0.1, `requests` `iter_content` (before) | "
        f"{reading['iter_content']:.2f} s | 1.00 |\n"
        f"| body read with `read_body` (size cap, minimum rate) | "
        f"{reading['read_body']:.2f} s | "
        f"{reading['read_body'] / reading['iter_content']:.2f} |\n\n"
        "The header pass decompresses the archive once more before anything is written: "
        "that is the price of refusing a bomb or an unsafe member before its first byte "
        "lands. The bounded read costs nothing measurable.\n")
    print(text)
    if args.write_docs:
        write_section("extract_caps", text)


if __name__ == "__main__":
    main()
