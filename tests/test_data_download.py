"""The bird-or-bicycle downloader against a local HTTP server with faults.

The server (http.server in a thread on 127.0.0.1) serves hand-made id lists,
generated JPEGs under the bucket's ``train/<id>.jpg`` layout, and a box CSV,
plus faults: 404, a truncated image, a response slower than the timeout, a
non-image body, and a transient 503.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llrnet.cli import main
from llrnet.core.errors import RunError
from llrnet.core.http import RetryPolicy
from llrnet.data.bird_or_bicycle import ExtrasRule, Sources, download, verify
from llrnet.data.bird_or_bicycle import sources as sources_module


def make_id(class_name: str, index: int) -> str:
    """Deterministic 16-hex ids; bird and bicycle ids never collide."""
    return hashlib.sha256(f"{class_name}{index}".encode()).hexdigest()[:16]


def color_of(image_id: str) -> tuple[int, int, int]:
    """The solid color the server paints for an id (to check files land right)."""
    raw = bytes.fromhex(image_id)
    return (30 + raw[0] % 200, 30 + raw[1] % 200, 30 + raw[2] % 200)


def jpeg_for(image_id: str, size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color_of(image_id)).save(out, format="JPEG", quality=95)
    return out.getvalue()


@dataclass
class FakeBucket:
    """Routes, faults and a request counter shared with the handler threads."""

    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, str] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    transient: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    auth: str | None = None  # the Authorization every /bucket/ request must carry
    seen_auth: set[str | None] = field(default_factory=set)


def _handler(bucket: FakeBucket) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes, length: int | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path
            with bucket.lock:
                bucket.hits[path] += 1
                fault = bucket.faults.get(path.split("?")[0])
                if fault == "transient" and bucket.transient[path] < 2:
                    bucket.transient[path] += 1
                    fault = "503"
                elif fault == "transient":
                    fault = None
            body = bucket.files.get(path.split("?")[0])
            if path.startswith("/bucket/"):
                bucket.seen_auth.add(self.headers.get("Authorization"))
                if bucket.auth is not None and self.headers.get("Authorization") != bucket.auth:
                    fault = "401"
            if fault == "401":
                self._send(401, b"who are you")
            elif fault == "404" or body is None:
                self._send(404, b"not found")
            elif fault == "503":
                self._send(503, b"busy")
            elif fault == "slow":
                time.sleep(1.0)
                self._send(200, body)
            elif fault == "truncated":
                self._send(200, body[: len(body) // 2])
            elif fault == "short-body":  # promises more bytes than it sends
                self._send(200, body[: len(body) // 2], length=len(body))
                self.close_connection = True
            elif fault == "html":
                self._send(200, b"<html><body>Access denied</body></html>")
            elif fault == "endless":  # no Content-Length, bytes until the client hangs up
                self.send_response(200)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    while True:
                        self.wfile.write(b"\xff" * 65536)
            elif fault == "drip":  # a byte every 0.05 s: never a read timeout, far too slow
                self.send_response(200)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    for byte in body[:200]:
                        time.sleep(0.05)
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
            elif fault == "loop":
                self.send_response(302)
                self.send_header("Location", path + "?again=1" if "?" not in path else
                                 path.split("?")[0])
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif fault == "to-file":
                self.send_response(301)
                self.send_header("Location", "file:///etc/passwd")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._send(200, body)

    return Handler


@pytest.fixture
def bucket() -> Iterator[FakeBucket]:
    state = FakeBucket()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


N_PER_LIST = 130  # > 125 so that the test split is a strict prefix


@pytest.fixture
def served(bucket: FakeBucket, monkeypatch: pytest.MonkeyPatch) -> FakeBucket:
    """Id lists, images (alternating landscape/portrait) and pinned digests."""
    for class_name in ("bird", "bicycle"):
        ids = [make_id(class_name, i) for i in range(N_PER_LIST)]
        text = ("\n".join(ids) + "\n").encode()
        bucket.files[f"/lists/{class_name}_image_ids.csv"] = text
        monkeypatch.setitem(sources_module.ID_LIST_SHA256, class_name,
                            hashlib.sha256(text).hexdigest())
        for i, image_id in enumerate(ids):
            size = (48, 36) if i % 2 else (30, 52)
            bucket.files[f"/bucket/train/{image_id}.jpg"] = jpeg_for(image_id, size)
    monkeypatch.setenv("LLRNET_BOB_ID_LIST_URL", f"{bucket.url}/lists")
    monkeypatch.setenv("LLRNET_BOB_BOXES_URL", f"{bucket.url}/boxes.csv")
    return bucket


def image_path(class_name: str, index: int) -> str:
    return f"/bucket/train/{make_id(class_name, index)}.jpg"


def cli_download(root: Path, bucket: FakeBucket, *extra: str) -> int:
    return main(["data", "download", "--root", str(root), "--splits", "test",
                 "--mirror", f"{bucket.url}/bucket", "--timeout", "0.3", "--retries", "2",
                 "--workers", "8", "--no-progress", *extra])


@pytest.mark.slow
def test_download_reports_faults_then_resumes(
    served: FakeBucket, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    faults = {
        image_path("bird", 3): "404",
        image_path("bird", 7): "truncated",
        image_path("bicycle", 0): "slow",
        image_path("bicycle", 5): "html",
        image_path("bicycle", 9): "short-body",
    }
    served.faults.update(faults)
    served.faults[image_path("bird", 11)] = "transient"  # 503 twice, then fine
    root = tmp_path / "bob"

    assert cli_download(root, served) == 1
    err = capsys.readouterr().err
    assert "incomplete" in err and "download_report.json" in err

    base = root / "0.0.4"
    report = json.loads((base / "download_report.json").read_text())
    assert report["complete"] is False
    assert report["downloaded"] == 250 - len(faults) and report["skipped"] == 0
    reasons = {f["url"].split("/")[-1][:-4]: f["reason"] for f in report["failed"]}
    assert set(reasons) == {p.split("/")[-1][:-4] for p in faults}
    assert reasons[make_id("bird", 3)].startswith("HTTP 404")
    assert "not a decodable image" in reasons[make_id("bird", 7)]
    assert "timed out" in reasons[make_id("bicycle", 0)]
    assert "not a decodable image" in reasons[make_id("bicycle", 5)]
    assert "attempts" in reasons[make_id("bicycle", 9)]
    assert report["expected"] == {"test": {"bicycle": 125, "bird": 125}}
    assert report["present"] == {"test": {"bicycle": 122, "bird": 123}}
    # 404 is permanent (one request); retried faults were asked 3 times.
    assert served.hits[image_path("bird", 3)] == 1
    assert served.hits[image_path("bird", 7)] == 3
    assert served.hits[image_path("bird", 11)] == 3  # two 503s, then success

    # Layout: only the test split, the first 125 ids of each list, 299x299 JPEGs
    # holding the served image's color; no temporary files left behind.
    assert sorted(p.name for p in base.iterdir()) == ["download_report.json", "metadata", "test"]
    for class_name in ("bird", "bicycle"):
        files = sorted((base / "test" / class_name).iterdir())
        expected_ids = {make_id(class_name, i) for i in range(125)}
        assert {f.stem for f in files} <= expected_ids
        assert all(f.suffix == ".jpg" for f in files)
        for f in files[:10]:
            with Image.open(f) as image:
                assert image.format == "JPEG" and image.size == (299, 299)
                mean = np.asarray(image).reshape(-1, 3).mean(axis=0)
            assert np.abs(mean - np.array(color_of(f.stem))).max() < 4
    assert (base / "metadata" / "bird_image_ids.csv").read_bytes() == \
        served.files["/lists/bird_image_ids.csv"]

    # Damage one good file on disk: the rerun must replace it too.
    damaged = base / "test" / "bird" / f"{make_id('bird', 20)}.jpg"
    damaged.write_bytes(damaged.read_bytes()[:100])

    served.faults.clear()
    served.hits.clear()
    assert cli_download(root, served) == 0
    image_hits = {p for p in served.hits if p.startswith("/bucket/")}
    assert image_hits == set(faults) | {image_path("bird", 20)}
    # The verified id lists were reused from <root>/0.0.4/metadata.
    assert not any(p.startswith("/lists/") for p in served.hits)
    report = json.loads((base / "download_report.json").read_text())
    assert report["complete"] is True and report["failed"] == []
    assert report["downloaded"] == len(faults) + 1
    assert report["skipped"] == 250 - len(faults) - 1
    assert verify(root, "test").ok


def test_id_list_checksum_mismatch_writes_nothing(
    bucket: FakeBucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for class_name in ("bird", "bicycle"):
        bucket.files[f"/lists/{class_name}_image_ids.csv"] = f"{make_id(class_name, 0)}\n".encode()
    monkeypatch.setenv("LLRNET_BOB_ID_LIST_URL", f"{bucket.url}/lists")
    root = tmp_path / "bob"
    # Against the real pins (the default), the served lists are rejected.
    with pytest.raises(RunError, match=r"sha256 mismatch for .*bicycle_image_ids\.csv.*nothing"):
        download(root, "test", sources=Sources(image_base=f"{bucket.url}/bucket"),
                 policy=RetryPolicy(timeout=1, attempts=1), progress=False)
    assert not root.exists()
    assert main(["data", "download", "--root", str(root), "--no-progress"]) == 1
    assert "sha256 mismatch" in capsys.readouterr().err
    assert not root.exists()
    assert not any(p.startswith("/bucket/") for p in bucket.hits)


def test_extras_download_uses_box_csv_and_caches_selection(
    served: FakeBucket, tmp_path: Path
) -> None:
    # Ids that appear only in the box CSV, plus one test and one train id.
    bird_extra = [make_id("bird-extra", i) for i in range(5)]
    bicycle_extra = make_id("bicycle-extra", 0)
    for image_id in [*bird_extra, bicycle_extra]:
        served.files[f"/bucket/train/{image_id}.jpg"] = jpeg_for(image_id, (40, 40))
    rows = ["ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,"
            "IsTruncated,IsGroupOf,IsDepiction,IsInside"]
    for image_id in bird_extra:
        rows.append(f"{image_id},xclick,/m/015p6,1,0.1,0.6,0.1,0.6,0,0,0,0,0")
    rows.append(f"{bicycle_extra},xclick,/m/0199g,1,0.0,1.0,0.0,1.0,0,0,0,0,0")
    rows.append(f"{make_id('bird', 0)},xclick,/m/015p6,1,0,1,0,1,0,0,0,0,0")  # test id
    rows.append(f"{make_id('bicycle', 126)},xclick,/m/0199g,1,0,1,0,1,0,0,0,0,0")  # train id
    served.files["/boxes.csv"] = ("\n".join(rows) + "\n").encode()
    root = tmp_path / "bob"
    rule = ExtrasRule(per_class=3)
    kwargs = dict(sources=Sources(image_base=f"{served.url}/bucket"),
                  policy=RetryPolicy(timeout=2, attempts=1), extras_rule=rule, progress=False)
    report = download(root, "extras", **kwargs)  # type: ignore[arg-type]
    # 3 birds (sorted truncation) but only one bicycle candidate: incomplete.
    assert report.present == {"extras": {"bicycle": 1, "bird": 3}}
    assert not report.complete
    birds = sorted(p.stem for p in (root / "0.0.4" / "extras" / "bird").glob("*.jpg"))
    assert birds == sorted(bird_extra)[:3]
    cached = json.loads((root / "0.0.4" / "metadata" / "extras_ids.json").read_text())
    assert cached["ids"]["bird"] == birds
    served.hits.clear()
    report = download(root, "extras", **kwargs)  # type: ignore[arg-type]
    assert served.hits["/boxes.csv"] == 0  # the selection came from the cache
    assert report.skipped == 4 and report.downloaded == 0


def test_sources_precedence_argument_over_environment_over_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LLRNET_BOB_IMAGE_URL", raising=False)
    monkeypatch.delenv("LLRNET_BOB_ID_LIST_URL", raising=False)
    default = Sources()
    assert default.image_url("0123456789abcdef") == \
        "https://open-images-dataset.s3.amazonaws.com/train/0123456789abcdef.jpg"
    assert default.id_list_url("bird") == (
        "https://raw.githubusercontent.com/google/unrestricted-adversarial-examples/"
        "7285875bfec2639be8e9867ea746407e061c653b/bird-or-bicycle/bird_or_bicycle/"
        "metadata/0.0.4/bird_image_ids.csv")
    monkeypatch.setenv("LLRNET_BOB_IMAGE_URL", "http://env.example/bucket/")
    assert Sources().image_url("x") == "http://env.example/bucket/train/x.jpg"
    assert Sources(image_base="http://arg.example").image_url("x") == \
        "http://arg.example/train/x.jpg"


def test_retry_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(backoff=0.5, max_backoff=3.0)
    assert [policy.wait(k) for k in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.slow
def test_image_downloads_are_bounded_and_what_cannot_succeed_is_asked_once(
    served: FakeBucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    faults = {image_path("bird", 1): "endless", image_path("bird", 2): "drip",
              image_path("bicycle", 1): "loop", image_path("bicycle", 2): "to-file"}
    served.faults.update(faults)
    monkeypatch.setenv("LLRNET_MIN_RATE", "1000")
    monkeypatch.setenv("LLRNET_RATE_WINDOW", "0.3")
    root = tmp_path / "bob"
    assert cli_download(root, served, "--max-image-size", "1M") == 1
    capsys.readouterr()
    report = json.loads((root / "0.0.4" / "download_report.json").read_text())
    reasons = {f["url"].split("/")[-1][:-4]: f["reason"] for f in report["failed"]}
    assert reasons[make_id("bird", 1)] == ("the body passed 1048576 bytes, over the download "
                                           "cap of 1 MiB; raise the cap with --max-image-size "
                                           "or $LLRNET_BOB_MAX_IMAGE_SIZE")
    assert re.match(r"too slow: \d+ bytes in 0\.\d s, below the minimum of 1000 bytes/s over "
                    r"0\.3 s .* \(after 3 attempts\)$", reasons[make_id("bird", 2)])
    assert re.match(r"redirect loop at http://127\.0\.0\.1:\d+/bucket/train/\w+\.jpg$",
                    reasons[make_id("bicycle", 1)])
    assert reasons[make_id("bicycle", 2)].startswith("refusing a redirect to a file: URL")
    hits = {p: n for p, n in served.hits.items() if p.startswith("/bucket/")}
    loop = image_path("bicycle", 1)
    assert (hits[image_path("bird", 1)], hits[image_path("bicycle", 2)]) == (1, 1)
    assert (hits[loop], hits[loop + "?again=1"]) == (1, 1)
    assert hits[image_path("bird", 2)] == 3  # too slow can pass on a retry: retried
    assert report["present"] == {"test": {"bicycle": 123, "bird": 123}}


def test_a_credentialed_mirror_is_used_but_never_written(
    served: FakeBucket, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import base64

    served.auth = "Basic " + base64.b64encode(b"mirror:hunter2").decode()
    served.faults[image_path("bird", 4)] = "404"
    root = tmp_path / "bob"
    mirror = served.url.replace("http://", "http://mirror:hunter2@") + "/bucket"
    caplog.set_level(logging.DEBUG)
    assert main(["data", "download", "--root", str(root), "--splits", "test", "--mirror",
                 mirror, "--retries", "0", "--no-progress"]) == 1
    out, err = capsys.readouterr()
    assert served.seen_auth == {served.auth}  # every image request carried it
    text = (root / "0.0.4" / "download_report.json").read_text()
    report = json.loads(text)
    assert report["sources"]["images"] == served.url.replace("http://", "http://REDACTED@") + \
        "/bucket"
    assert report["failed"][0]["url"].startswith("http://REDACTED@127.0.0.1")
    assert report["present"] == {"test": {"bicycle": 125, "bird": 124}}
    assert "hunter2" not in text + out + err + caplog.text


@pytest.mark.slow
def test_a_full_disk_stops_at_once_in_one_line_and_resumes(
    served: FakeBucket, tmp_path: Path,
) -> None:
    """ENOSPC is simulated by patching ``Path.write_bytes`` in a child process: the
    sixth image write puts half its bytes on disk, then fails as a full disk does."""
    root = tmp_path / "bob"
    digests = dict(sources_module.ID_LIST_SHA256)
    code = f"""
import errno, pathlib, sys
import llrnet.data.bird_or_bicycle.sources as sources
sources.ID_LIST_SHA256.update({digests!r})
real = pathlib.Path.write_bytes
count = [0]
def write_bytes(self, data):
    if "/0.0.4/test/" in str(self):
        count[0] += 1
        if count[0] > 5:
            real(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
    return real(self, data)
pathlib.Path.write_bytes = write_bytes
from llrnet.cli import main
sys.exit(main(sys.argv[1:]))
"""
    argv = ["data", "download", "--root", str(root), "--splits", "test", "--mirror",
            f"{served.url}/bucket", "--workers", "8", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"llrnet data download: error: no space left on device: {root / '0.0.4'}"]
    base = root / "0.0.4"
    images = sorted(base.glob("test/*/*"))
    assert len(images) == 5 and all(p.suffix == ".jpg" for p in images)  # no temporaries
    assert not (base / "download_report.json").exists()
    served.hits.clear()
    assert cli_download(root, served) == 0  # the rerun completes what is missing
    report = json.loads((base / "download_report.json").read_text())
    assert (report["downloaded"], report["skipped"], report["complete"]) == (245, 5, True)
    assert sum(1 for p in served.hits if p.startswith("/bucket/")) == 245
