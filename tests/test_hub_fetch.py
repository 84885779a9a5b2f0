"""Fetching modules by handle or URL, against a local server with tfhub.dev's redirect chain.

The server on 127.0.0.1 answers ``/<handle>?tf-hub-format=compressed`` with a
redirect to a Kaggle-like page, which redirects to a storage URL that serves
the fixture archive, as tfhub.dev -> Kaggle Models -> storage do. Faults
(404, HTML with status 200, truncated bodies, stalls) are switched per test.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch

from hub_helpers import FIXTURES, golden
from llrnet.cli import main
from llrnet.core.errors import InputError, RunError
from llrnet.core.http import RetryPolicy
from llrnet.hub.formats.archive import extract_archive, file_sha256
from llrnet.hub.remote.cache import fetch_module, hub_cache_root
from llrnet.hub.remote.sources import from_handle, from_url, resolve_source
from llrnet.models import load_weights, read_metadata

LATENTS = "deepmind/llr-pretrain-adv/latents/1"
LINEAR = "deepmind/llr-pretrain-adv/linear/1"
CIFAR = "deepmind/local-linearity/cifar10/1"
ARCHIVES = {LATENTS: "dm_latents.tar.gz", LINEAR: "dm_linear.tar.gz", CIFAR: "dm_cifar10.tar.gz"}
FAST = RetryPolicy(timeout=5.0, attempts=2, backoff=0.0)


class Hub:
    """The server's behaviour: which fault the storage hop shows, and what it saw."""

    def __init__(self) -> None:
        self.fault: str | None = None
        self.requests: list[str] = []
        self.stall = threading.Event()


class Handler(BaseHTTPRequestHandler):
    hub: Hub

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str, length: int | None = None
              ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.hub.requests.append(self.path)
        parts = urlsplit(self.path)
        path = parts.path.strip("/")
        if path.startswith("storage/"):
            self._storage(path[len("storage/"):])
        elif path.startswith("models/"):  # the Kaggle hop: owner/model/framework/variation/v
            owner, model, _, variation, version = path[len("models/"):].split("/")
            self._redirect(f"/storage/{owner}/{model}/{variation}/{version}.tar.gz?sig=abc")
        elif path in ARCHIVES and parts.query == "tf-hub-format=compressed":
            owner, model, variation, version = path.split("/")
            self._redirect(f"/models/{owner}/{model}/tensorFlow1/{variation}/{version}"
                           "?tf-hub-format=compressed")
        else:
            self._send(404, b"not found", "text/plain")

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _storage(self, name: str) -> None:
        handle = name.removesuffix(".tar.gz")
        body = (FIXTURES / ARCHIVES[handle]).read_bytes()
        fault = self.hub.fault
        if fault == "404":
            self._send(404, b"<Error>NoSuchKey</Error>", "application/xml")
        elif fault == "html":
            self._send(200, b"<!DOCTYPE html><html><body>Sign in to Kaggle</body></html>",
                       "text/html; charset=utf-8")
        elif fault == "truncated":  # a complete transfer of a truncated file
            self._send(200, body[: len(body) // 2], "application/x-tar")
        elif fault == "short-once":  # the connection drops once, then all is well
            self.hub.fault = None
            self._send(200, body[: len(body) // 3], "application/x-tar", length=len(body))
        elif fault == "stall":  # half the body, then nothing until released
            self.send_response(200)
            self.send_header("Content-Type", "application/x-tar")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.hub.stall.wait(30)
        else:
            self._send(200, body, "application/x-tar")


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Hub, str]]:
    state = Hub()
    handler = type("BoundHandler", (Handler,), {"hub": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("LLRNET_HUB_URL", base)
    monkeypatch.setenv("LLRNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TFHUB_CACHE_DIR", raising=False)
    try:
        yield state, base
    finally:
        state.stall.set()
        server.shutdown()
        server.server_close()


def _cache_entries() -> list[str]:
    root = hub_cache_root()
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_sources_resolve_like_tensorflow_hub(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.delenv("LLRNET_HUB_URL", raising=False)
    remote = from_handle(LATENTS)
    assert remote.url == f"https://tfhub.dev/{LATENTS}"
    assert remote.fetch_url == f"https://tfhub.dev/{LATENTS}?tf-hub-format=compressed"
    # tensorflow_hub's cache folder names (hub-modules.md section 7)
    assert remote.cache_key == "9b6d5ca8d9ebbc870c3b405c335543083441386a"
    assert from_handle(LINEAR).cache_key == "62ddac301d4aea290c0b939e2d046f4dedc08848"
    assert from_url("https://tfhub.dev/deepmind/local-linearity/cifar10/1").cache_key == \
        "2f9d2e1cf7487caa2c3f3822bb9ebbcc9b3b3995"
    imagenet = resolve_source("deepmind/local-linearity/imagenet/1")
    assert not isinstance(imagenet, Path)
    assert imagenet.cache_key == "49ed1137cc7e1859bdcf4ec211c28e38a14cd3b7"
    assert imagenet.pinned_sha256 == ("12b60e87833b67dc9f0ee8559de16b5a44b6db2cf0398ae633f"
                                      "b2f8eed66f7f3")
    kaggle = from_url("https://www.kaggle.com/models/deepmind/local-linearity/tensorFlow1/"
                      "imagenet/1")
    assert kaggle.fetch_url.endswith("/imagenet/1?tf-hub-format=compressed")
    assert kaggle.pinned_sha256 == imagenet.pinned_sha256 and kaggle.url != imagenet.url
    storage = from_url("https://storage.googleapis.com/tfhub-modules/deepmind/local-linearity/"
                       "imagenet/1.tar.gz")
    assert storage.fetch_url == storage.url and storage.pinned_sha256 == imagenet.pinned_sha256
    monkeypatch.setenv("LLRNET_HUB_URL", "http://mirror.example/")
    mirrored = from_handle(LATENTS)
    assert mirrored.fetch_url.startswith("http://mirror.example/deepmind/")
    assert mirrored.cache_key == remote.cache_key  # a mirror serves the same module
    assert resolve_source(FIXTURES / "cifar10") == FIXTURES / "cifar10"
    with pytest.raises(InputError, match="not an existing folder or archive, nor a handle"):
        resolve_source(tmp_path / "missing")


def test_handle_import_follows_redirects_and_fills_the_cache(
        hub: tuple[Hub, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state, _ = hub
    out = tmp_path / "llr.safetensors"
    assert main(["import-hub", LATENTS, "--linear", LINEAR, "--out", str(out)]) == 0
    hops = [p.split("?")[0] for p in state.requests]
    assert hops[:3] == [f"/{LATENTS}", "/models/deepmind/llr-pretrain-adv/tensorFlow1/latents/1",
                        "/storage/deepmind/llr-pretrain-adv/latents/1.tar.gz"]
    key = from_handle(LATENTS).cache_key
    assert {key, f"{key}.descriptor.txt"} <= set(_cache_entries())
    descriptor = (hub_cache_root() / f"{key}.descriptor.txt").read_text()
    assert descriptor.startswith(f"Module: https://tfhub.dev/{LATENTS}\n")
    digest = file_sha256(FIXTURES / ARCHIVES[LATENTS])
    source = read_metadata(out)["source"]["module"]
    assert source == {"path": f"https://tfhub.dev/{LATENTS}", "sha256": digest,
                      "sha256_checked": False, "sha256_of": "archive"}
    data = golden("dm_latents")
    with torch.no_grad():
        bird = load_weights(out).bird_logit(torch.from_numpy(data["images"]).permute(0, 3, 1, 2))
    np.testing.assert_allclose(bird.numpy(), data["bird_logit"], atol=1e-5, rtol=0)
    # the second run is served by the cache (no request), also offline
    state.requests.clear()
    assert main(["import-hub", LATENTS, "--linear", LINEAR, "--out", str(out), "--offline"]) == 0
    assert state.requests == []
    assert read_metadata(out)["source"]["module"]["sha256"] == digest
    capsys.readouterr()


def test_a_cache_filled_by_tensorflow_is_used(hub: tuple[Hub, str], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    state, _ = hub
    shared = tmp_path / "tfhub_modules"
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(shared))
    key = hashlib.sha1(f"https://tfhub.dev/{CIFAR}".encode()).hexdigest()
    extract_archive(FIXTURES / ARCHIVES[CIFAR], shared / key)  # no llrnet descriptor line
    out = tmp_path / "wrn.safetensors"
    assert main(["import-hub", f"https://tfhub.dev/{CIFAR}", "--out", str(out),
                 "--offline"]) == 0
    assert state.requests == []
    source = read_metadata(out)["source"]["module"]
    assert source["sha256_of"] == "module files" and source["path"] == f"https://tfhub.dev/{CIFAR}"


@pytest.mark.parametrize(("fault", "message"), [
    ("404", r"storage/deepmind/local-linearity/cifar10/1\.tar\.gz\?sig=REDACTED: HTTP 404"),
    ("html", r"answered with an HTML page, not a module archive"),
    ("truncated", r"cifar10/1\?tf-hub-format=compressed: .*not a readable tar archive"),
])
def test_faults_end_in_one_line_and_an_untouched_cache(
        hub: tuple[Hub, str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        fault: str, message: str) -> None:
    state, _ = hub
    state.fault = fault
    code = main(["import-hub", CIFAR, "--out", str(tmp_path / "x.safetensors")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert _cache_entries() == [] and not (tmp_path / "x.safetensors").exists()


def test_offline_without_cache_says_what_is_missing(hub: tuple[Hub, str],
                                                    capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path) -> None:
    assert main(["inspect-hub", CIFAR, "--offline"]) == 2
    err = capsys.readouterr().err
    assert f"https://tfhub.dev/{CIFAR} is not in the cache" in err and "offline" in err


def test_a_wrong_pinned_sha256_is_refused(hub: tuple[Hub, str], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("llrnet.hub.formats.archive.KNOWN_SHA256",
                        {f"{CIFAR}.tar.gz": "0" * 64})
    out = tmp_path / "x.safetensors"
    assert main(["import-hub", CIFAR, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert re.search(r"archive sha256 [0-9a-f]{64} does not match the pinned 0{64}", err), err
    assert _cache_entries() == [] and not out.exists()
    digest = file_sha256(FIXTURES / ARCHIVES[CIFAR])
    monkeypatch.setattr("llrnet.hub.formats.archive.KNOWN_SHA256", {f"{CIFAR}.tar.gz": digest})
    assert main(["import-hub", CIFAR, "--out", str(out)]) == 0
    assert "sha256 matched" in capsys.readouterr().out
    assert read_metadata(out)["source"]["module"]["sha256_checked"] is True
    cached = fetch_module(from_handle(CIFAR), policy=FAST, progress=False, offline=True)
    assert cached.sha256 == digest and cached.sha256_checked and not cached.downloaded


def test_a_broken_transfer_is_retried(hub: tuple[Hub, str]) -> None:
    state, _ = hub
    state.fault = "short-once"
    cached = fetch_module(from_handle(CIFAR), policy=FAST, progress=False)
    assert cached.downloaded and cached.sha256 == file_sha256(FIXTURES / ARCHIVES[CIFAR])
    storage_hits = [p for p in state.requests if p.startswith("/storage/")]
    assert len(storage_hits) == 2
    state.fault = "short-once"
    state.requests.clear()
    with pytest.raises(RunError, match=r"(transfer broken after|truncated:) \d+ .*"
                                       r"\(after 1 attempts\)"):
        fetch_module(from_handle(LINEAR), policy=RetryPolicy(timeout=5.0, attempts=1),
                     progress=False)


@pytest.mark.slow
def test_download_killed_midway_then_run_again(hub: tuple[Hub, str], tmp_path: Path) -> None:
    state, _ = hub
    state.fault = "stall"
    out = tmp_path / "wrn.safetensors"
    command = [sys.executable, "-m", "llrnet", "import-hub", CIFAR, "--out", str(out)]
    process = subprocess.Popen(command, env=dict(os.environ), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    root = hub_cache_root()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the partial archive is on disk
            partial = list(root.glob(".*.tmp/module.tar.gz")) if root.exists() else []
            if partial and partial[0].stat().st_size > 0:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the download never started")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    key = from_handle(CIFAR).cache_key
    assert key not in _cache_entries()  # nothing half-downloaded looks complete
    assert not out.exists()
    state.stall.set()
    state.fault = None
    assert main(["import-hub", CIFAR, "--out", str(out)]) == 0
    assert _cache_entries() == [key, f"{key}.descriptor.txt"]  # the leftover was swept
    assert read_metadata(out)["architecture"] == "wide_resnet"
    shutil.rmtree(root)


@pytest.fixture
def tiny_release(monkeypatch: pytest.MonkeyPatch) -> None:
    """``llr_pretrain_adv`` released as the DeepMind-built fixtures (a tiny architecture)."""
    from llrnet.models.zoo import RELEASED, Released

    monkeypatch.setitem(RELEASED, "llr_pretrain_adv",
                        Released(LATENTS, "the tiny fixture pair", linear=LINEAR,
                                 architecture="llr_pretrain_adv_tiny"))


def _bird(model: torch.nn.Module) -> np.ndarray:
    data = golden("dm_latents")
    with torch.no_grad():
        return model.bird_logit(torch.from_numpy(data["images"]).permute(0, 3, 1, 2)).numpy()


@pytest.mark.usefixtures("tiny_release")
def test_create_model_pretrained_fetches_converts_once_and_caches(
        hub: tuple[Hub, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from llrnet.core.errors import UsageError
    from llrnet.hub.pretrained import weights_path
    from llrnet.models import create_model

    state, _ = hub
    monkeypatch.setenv("LLRNET_OFFLINE", "1")
    with pytest.raises(InputError, match=r"llr_pretrain_adv: no converted weights at .*, and "
                                         rf"the modules {LATENTS}, {LINEAR} are not in the "
                                         r"module cache \(offline\)"):
        create_model("llr_pretrain_adv", pretrained=True)
    monkeypatch.delenv("LLRNET_OFFLINE")
    assert main(["pretrained"]) == 0
    listing = capsys.readouterr().out
    assert f"{LATENTS} (not cached)" in listing and "weights not converted" in listing
    model = create_model("llr_pretrain_adv", pretrained=True)
    np.testing.assert_allclose(_bird(model), golden("dm_latents")["bird_logit"], atol=1e-5,
                               rtol=0)
    assert weights_path("llr_pretrain_adv").is_file()
    state.requests.clear()
    monkeypatch.setenv("LLRNET_OFFLINE", "1")
    again = create_model("llr_pretrain_adv", pretrained=True)  # from the converted cache
    assert state.requests == [] and again.llrnet_metadata["sha256"] == \
        model.llrnet_metadata["sha256"]
    assert main(["pretrained"]) == 0
    assert f"{LATENTS} (cached)" in capsys.readouterr().out
    with pytest.raises(UsageError, match="no arguments"):
        create_model("llr_pretrain_adv", pretrained=True, depth=50)
    with pytest.raises(UsageError, match="no released weights for 'digits_wrn'"):
        create_model("digits_wrn", pretrained=True)


@pytest.mark.usefixtures("tiny_release")
def test_cli_pretrained_and_torch_hub_load(hub: tuple[Hub, str],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pretrained", "llr_pretrain_adv"]) == 0
    assert "llr_pretrain_adv.safetensors" in capsys.readouterr().out
    repository = Path(__file__).resolve().parents[1]
    model = torch.hub.load(str(repository), "llr_pretrain_adv", source="local",
                           pretrained=True, trust_repo=True)
    np.testing.assert_allclose(_bird(model), golden("dm_latents")["bird_logit"], atol=1e-5,
                               rtol=0)


def test_a_stalled_transfer_times_out(hub: tuple[Hub, str]) -> None:
    state, _ = hub
    state.fault = "stall"
    with pytest.raises(RunError, match=r"transfer broken after \d+ bytes \(ReadTimeoutError\) "
                                       r"\(after 1 attempts\)"):
        fetch_module(from_handle(CIFAR), policy=RetryPolicy(timeout=0.5, attempts=1),
                     progress=False)
    assert _cache_entries() == []
