"""Hostile servers, archives and disks against the module fetch, cache and extraction.

A server on 127.0.0.1 answers with an endless body, a body announced larger
than the cap, a drip (one byte now and then), a redirect loop, redirects to
``file:`` and ``ftp:`` URLs, chosen status codes, and a module behind basic
auth and a token; it counts the requests per path. Bomb archives are built
here: 100 MiB of zeros in about 100 KiB, alone or beside a valid module.
Every refusal must be one line, leave the cache as it was and, for what a
retry cannot fix, cost exactly one request.
"""

from __future__ import annotations

import base64
import errno
import io
import logging
import os
import re
import tarfile
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from hub_helpers import FIXTURES
from llrnet.cli import main
from llrnet.core.errors import InputError, RunError, UsageError
from llrnet.core.http import (
    FetchError,
    RetryPolicy,
    TransferLimits,
    fetch,
    format_size,
    parse_size,
    redact_text,
    redact_url,
)
from llrnet.hub.formats.archive import ExtractionLimits, extract_archive
from llrnet.hub.remote.cache import fetch_module, hub_cache_root
from llrnet.hub.remote.sources import from_url
from llrnet.models import read_metadata

FAST = RetryPolicy(timeout=5.0, attempts=3, backoff=0.0)
GOOD = (FIXTURES / "dm_linear.tar.gz").read_bytes()
USER, PASSWORD, TOKEN = "alice", "s3cret-pw", "t0ken-value"
SECRETS = (PASSWORD, TOKEN, "sig-value", "amz-value")


def _zeros_archive(path: Path, size: int = 100 << 20, beside: Path | None = None) -> Path:
    """A ``.tar.gz`` with a ``size``-byte file of zeros (after the module ``beside``'s files)."""
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        if beside is not None:
            for file in sorted(beside.rglob("*")):
                archive.add(file, arcname=file.relative_to(beside).as_posix(), recursive=False)

        class Zeros(io.RawIOBase):
            left = size

            def readable(self) -> bool:
                return True

            def readinto(self, buffer: Any) -> int:
                n = min(len(buffer), self.left)
                buffer[:n] = bytes(n)
                self.left -= n
                return n

        info = tarfile.TarInfo("variables/padding.bin")
        info.size = size
        archive.addfile(info, io.BufferedReader(Zeros()))
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    members = folder / "members.tar.gz"
    with tarfile.open(members, "w:gz") as archive:
        for i in range(60):
            archive.addfile(tarfile.TarInfo(f"f{i:03d}"), io.BytesIO(b""))
    return {"bomb": _zeros_archive(folder / "bomb.tar.gz"),
            "beside": _zeros_archive(folder / "beside.tar.gz", beside=FIXTURES / "linear"),
            "members": members}


class Server:
    """What the handler serves and what it saw."""

    def __init__(self, bombs: dict[str, Path]) -> None:
        self.hits: Counter[str] = Counter()
        self.auth: list[str | None] = []
        self.stop = threading.Event()
        self.bodies = {f"/{name}.tar.gz": path.read_bytes() for name, path in bombs.items()}
        self.bodies["/good.tar.gz"] = GOOD
        self.url = ""


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _head(self, status: int, headers: dict[str, str]) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()

        def _redirect(self, location: str) -> None:
            self._head(302, {"Location": location, "Content-Length": "0"})

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            path = parts.path
            server.hits[path] += 1
            try:
                if path in server.bodies:
                    body = server.bodies[path]
                    self._head(200, {"Content-Length": str(len(body))})
                    self.wfile.write(body)
                elif path == "/endless.tar.gz":  # gzip magic, then random bytes, no length
                    self._head(200, {"Content-Type": "application/gzip"})
                    self.wfile.write(b"\x1f\x8b\x08\x00" + os.urandom(1 << 16))
                    while not server.stop.is_set():
                        self.wfile.write(os.urandom(1 << 16))
                elif path == "/huge.tar.gz":  # announces a terabyte
                    self._head(200, {"Content-Length": str(1 << 40)})
                    self.wfile.write(b"\x1f\x8b\x08\x00" + bytes(1024))
                elif path == "/drip.tar.gz":  # a byte every 0.1 s, well within the timeout
                    self._head(200, {"Content-Type": "application/gzip"})
                    self.wfile.write(b"\x1f\x8b")
                    for _ in range(300):
                        if server.stop.wait(0.1):
                            break
                        self.wfile.write(b"\0")
                        self.wfile.flush()
                elif path == "/loop/a.tar.gz":
                    self._redirect("/loop/b.tar.gz")
                elif path == "/loop/b.tar.gz":
                    self._redirect(f"{server.url}/loop/a.tar.gz")
                elif path == "/to-file.tar.gz":
                    self._redirect("file:///etc/passwd")
                elif path == "/to-ftp.tar.gz":
                    self._redirect("ftp://127.0.0.1/module.tar.gz")
                elif path.startswith("/status/"):
                    self._head(int(path.split("/")[2][:3]), {"Retry-After": "0",
                                                             "Content-Length": "0"})
                elif path.startswith("/auth/"):
                    server.auth.append(self.headers.get("Authorization"))
                    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                    query = parse_qs(parts.query)
                    if self.headers.get("Authorization") != expected or \
                            query.get("token") != [TOKEN]:
                        self._head(401, {"Content-Length": "0"})
                    elif query.get("fail") == ["500"]:
                        self._head(500, {"Content-Length": "0"})
                    elif query.get("fail") == ["404"]:
                        self._head(404, {"Content-Length": "0"})
                    else:
                        name = path.removeprefix("/auth/").removesuffix(".tar.gz")
                        body = (FIXTURES / f"dm_{name}.tar.gz").read_bytes()
                        self._head(200, {"Content-Length": str(len(body))})
                        self.wfile.write(body)
                else:
                    self._head(404, {"Content-Length": "0"})
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


@pytest.fixture
def server(bombs: dict[str, Path], tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    state = Server(bombs)
    http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    http.daemon_threads = True
    thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{http.server_address[1]}"
    monkeypatch.setenv("LLRNET_CACHE", str(tmp_path / "cache"))
    for name in ("TFHUB_CACHE_DIR", "LLRNET_HUB_CACHE", "LLRNET_HUB_MAX_DOWNLOAD",
                 "LLRNET_MIN_RATE", "LLRNET_RATE_WINDOW", "LLRNET_HUB_MAX_EXTRACT",
                 "LLRNET_HUB_MAX_MEMBERS", "LLRNET_HUB_MAX_RATIO"):
        monkeypatch.delenv(name, raising=False)
    try:
        yield state
    finally:
        state.stop.set()
        http.shutdown()
        http.server_close()


def _cache() -> list[str]:
    root = hub_cache_root()
    return sorted(p.name for p in root.rglob("*")) if root.exists() else []


def _one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in out + err, err
    return code, lines[0]


# --- redaction -------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "expected"), [
    ("http://user:pw@host/m.tar.gz", "http://REDACTED@host/m.tar.gz"),
    ("https://tok@host:8080/m?x=1", "https://REDACTED@host:8080/m?x=1"),
    ("https://h/m?token=abc&v=2", "https://h/m?token=REDACTED&v=2"),
    ("https://h/m?access_token=a&key=b&api_key=c&password=d&client_secret=e",
     "https://h/m?access_token=REDACTED&key=REDACTED&api_key=REDACTED&password=REDACTED"
     "&client_secret=REDACTED"),
    ("https://s.example/o?X-Amz-Algorithm=AWS4&X-Amz-Credential=AK%2F1&X-Amz-Signature=ff"
     "&X-Amz-Security-Token=tt&versionId=3",
     "https://s.example/o?X-Amz-Algorithm=REDACTED&X-Amz-Credential=REDACTED"
     "&X-Amz-Signature=REDACTED&X-Amz-Security-Token=REDACTED&versionId=3"),
    ("https://s.example/o?Expires=1700000000&Signature=abc&Key-Pair-Id=K",
     "https://s.example/o?Expires=REDACTED&Signature=REDACTED&Key-Pair-Id=REDACTED"),
    ("https://s.example/o?Expires=1700000000&generation=2",  # no signature: kept
     "https://s.example/o?Expires=1700000000&generation=2"),
    ("https://s.example/o?sig=abc&se=2030&sv=1", "https://s.example/o?sig=REDACTED&se=REDACTED&sv=1"),
    ("https://h/cb#access_token=abc&state=1", "https://h/cb#access_token=REDACTED&state=1"),
    ("https://h/m?TOKEN=abc", "https://h/m?TOKEN=REDACTED"),
    ("https://tfhub.dev/deepmind/x/1?tf-hub-format=compressed",
     "https://tfhub.dev/deepmind/x/1?tf-hub-format=compressed"),
    ("/a/local/path.tar.gz", "/a/local/path.tar.gz"),
])
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert redact_url(expected) == expected  # idempotent


def test_redact_text_finds_urls_and_bare_queries() -> None:
    message = ("HTTPConnectionPool(host='h', port=80): Max retries exceeded with url: "
               "/m.tar.gz?token=abc&x=1 (Caused by ...) while getting http://u:p@h/x?sig=q.")
    assert redact_text(message) == (
        "HTTPConnectionPool(host='h', port=80): Max retries exceeded with url: "
        "/m.tar.gz?token=REDACTED&x=1 (Caused by ...) while getting "
        "http://REDACTED@h/x?sig=REDACTED")
    error = FetchError("http://u:p@h/x?key=k", "HTTP 404 at http://h/y?token=t")
    assert str(error) == "http://REDACTED@h/x?key=REDACTED: HTTP 404 at http://h/y?token=REDACTED"


def test_sizes_parse_and_format() -> None:
    assert [parse_size(s) for s in ("1000", "4G", "4GiB", "512M", "1.5k", "2T")] == [
        1000, 4 << 30, 4 << 30, 512 << 20, 1536, 2 << 40]
    for bad in ("abc", "0", "-1G", "4X"):
        with pytest.raises(ValueError, match=r"not a size|must be > 0"):
            parse_size(bad)
    assert [format_size(n) for n in (100, 1536, 4 << 30)] == ["100 bytes", "1.5 KiB", "4 GiB"]


def test_a_credentialed_url_is_used_but_never_shown_cached_or_recorded(
        server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    host = server.url.removeprefix("http://")
    url = (f"http://{USER}:{PASSWORD}@{host}/auth/module.tar.gz?token={TOKEN}"
           "&X-Amz-Signature=amz-value&sig=sig-value")
    out = tmp_path / "llr.safetensors"
    caplog.set_level(logging.DEBUG)
    assert main(["import-hub", url.replace("/module.", "/latents."), "--linear",
                 url.replace("/module.", "/linear."), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    # the request carried the credentials (basic auth from the userinfo, the token)
    assert server.auth[0] == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    record = read_metadata(out)
    # the module's identity is its URL without userinfo and query
    assert record["source"]["module"]["path"] == f"http://{host}/auth/latents.tar.gz"
    assert record["source"]["linear"]["path"] == f"http://{host}/auth/linear.tar.gz"
    cached = "".join(p.read_text() for p in sorted(hub_cache_root().glob("*.descriptor.txt")))
    assert cached.count(f"Module: http://{host}/auth/") == 2
    assert main(["inspect-hub", url.replace("/module.", "/linear."), "--json", "--offline"]) == 0
    shown = capsys.readouterr()
    assert f'"source": "http://{host}/auth/linear.tar.gz"' in shown.out
    everything = (str(record) + cached + printed.out + printed.err + shown.out + shown.err
                  + caplog.text + out.read_bytes().decode("latin-1"))
    assert not [secret for secret in SECRETS if secret in everything]


@pytest.mark.parametrize("fail", ["404", "500"])
def test_a_credentialed_url_is_redacted_in_errors_and_logs(
        server: Server, tmp_path: Path, fail: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    host = server.url.removeprefix("http://")
    url = f"http://{USER}:{PASSWORD}@{host}/auth/module.tar.gz?token={TOKEN}&fail={fail}"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(InputError if fail == "404" else RunError) as raised:
        fetch_module(from_url(url), policy=FAST, progress=False)
    message = str(raised.value)
    assert f"http://REDACTED@{host}/auth/module.tar.gz?token=REDACTED&fail={fail}" in message
    assert server.hits["/auth/module.tar.gz"] == (1 if fail == "404" else 3)
    code, line = _one_line(["import-hub", url, "--out", str(tmp_path / "x.safetensors")]
                           if fail == "404" else ["inspect-hub", url, "--offline"], capsys)
    assert code == 2 and host in line
    assert not [s for s in SECRETS if s in message + line + caplog.text], caplog.text
    assert _cache() == []


# --- size caps, rate, redirects, status codes ----------------------------------------

def test_an_endless_body_stops_at_the_cap_in_one_request(
        server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    url = f"{server.url}/endless.tar.gz"
    with pytest.raises(InputError, match=r"endless\.tar\.gz: the body passed 1048576 bytes, "
                                         r"over the download cap of 1 MiB; raise the cap with "
                                         r"--max-download or \$LLRNET_HUB_MAX_DOWNLOAD"):
        fetch_module(from_url(url), policy=FAST, progress=False,
                     limits=TransferLimits(1 << 20, override="--max-download or "
                                                          "$LLRNET_HUB_MAX_DOWNLOAD"))
    assert server.hits["/endless.tar.gz"] == 1 and _cache() == []
    out = tmp_path / "x.safetensors"
    code, line = _one_line(["import-hub", url, "--out", str(out), "--max-download", "2M"],
                           capsys)
    assert code == 2 and "over the download cap of 2 MiB" in line, line
    monkeypatch.setenv("LLRNET_HUB_MAX_DOWNLOAD", "512K")
    code, line = _one_line(["inspect-hub", url], capsys)
    assert code == 2 and "over the download cap of 512 KiB" in line, line
    assert server.hits["/endless.tar.gz"] == 3 and _cache() == [] and not out.exists()
    code, line = _one_line(["inspect-hub", url, "--max-download", "lots"], capsys)
    assert code == 2 and "--max-download: 'lots' is not a size" in line, line


def test_a_larger_content_length_is_refused_before_reading(server: Server) -> None:
    with pytest.raises(InputError, match=r"the server announces 1099511627776 bytes, over the "
                                         r"download cap of 4 GiB"):
        fetch_module(from_url(f"{server.url}/huge.tar.gz"), policy=FAST, progress=False)
    assert server.hits["/huge.tar.gz"] == 1 and _cache() == []


def test_a_drip_fails_the_minimum_rate(server: Server, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LLRNET_MIN_RATE", "1000")
    monkeypatch.setenv("LLRNET_RATE_WINDOW", "0.5")
    with pytest.raises(RunError, match=r"drip\.tar\.gz: too slow: \d+ bytes in 0\.\d s, below "
                                       r"the minimum of 1000 bytes/s over 0\.5 s .*"
                                       r"\(after 2 attempts\)"):
        fetch_module(from_url(f"{server.url}/drip.tar.gz"), progress=False,
                     policy=RetryPolicy(timeout=5.0, attempts=2, backoff=0.0))
    assert server.hits["/drip.tar.gz"] == 2 and _cache() == []


@pytest.mark.parametrize(("path", "message", "requests_made"), [
    ("/loop/a.tar.gz", r"loop/a\.tar\.gz: redirect loop at http://127\.0\.0\.1:\d+/loop/a\.tar\.gz",
     {"/loop/a.tar.gz": 1, "/loop/b.tar.gz": 1}),
    ("/to-file.tar.gz", r"refusing a redirect to a file: URL \(from http://127",
     {"/to-file.tar.gz": 1}),
    ("/to-ftp.tar.gz", r"refusing a redirect to a ftp: URL", {"/to-ftp.tar.gz": 1}),
    ("/status/403.tar.gz", r"status/403\.tar\.gz: HTTP 403 \(no module there\)",
     {"/status/403.tar.gz": 1}),
    ("/status/418.tar.gz", r"HTTP 418", {"/status/418.tar.gz": 1}),
])
def test_what_cannot_succeed_fails_at_once_in_our_words(
        server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str], path: str,
        message: str, requests_made: dict[str, int]) -> None:
    code, line = _one_line(["import-hub", server.url + path, "--out",
                            str(tmp_path / "x.safetensors")], capsys)
    assert code == 2 and re.search(message, line), line
    assert "adapter" not in line
    assert dict(server.hits) == requests_made and _cache() == []


@pytest.mark.parametrize("status", [500, 502, 503, 429, 408])
def test_what_can_succeed_is_retried(server: Server, status: int) -> None:
    with pytest.raises(RunError, match=rf"HTTP {status} \(after 3 attempts\)"):
        fetch_module(from_url(f"{server.url}/status/{status}.tar.gz"), policy=FAST,
                     progress=False)
    assert server.hits[f"/status/{status}.tar.gz"] == 3


def test_a_tls_error_fails_at_once() -> None:
    calls = []

    class Session(requests.Session):
        def get(self, url: str | bytes, **kwargs: Any) -> requests.Response:
            calls.append(url)
            raise requests.exceptions.SSLError("certificate verify failed: self-signed")

    with pytest.raises(FetchError, match=r"^https://REDACTED@h/x\?token=REDACTED: TLS error: "
                                         r"certificate verify failed"):
        fetch("https://u:p@h/x?token=abc", policy=FAST, session=Session(), process=bytes)
    assert len(calls) == 1


def test_fetch_caps_a_body_and_its_decoding(server: Server) -> None:
    with pytest.raises(FetchError, match=r"over the download cap of 64 KiB") as raised:
        fetch(f"{server.url}/endless.tar.gz", policy=FAST, process=bytes,
              limits=TransferLimits(64 << 10))
    assert raised.value.permanent and server.hits["/endless.tar.gz"] == 1
    assert fetch(f"{server.url}/good.tar.gz", policy=FAST, process=bytes) == GOOD


# --- extraction caps -----------------------------------------------------------------

def _cache_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*")) if root.exists() else []


@pytest.mark.parametrize(("name", "limits", "message"), [
    ("bomb", None, r"uncompressed size passes 100 MiB at 'variables/padding\.bin', over 100 "
                   r"times the archive's .* \(the ratio cap, \$LLRNET_HUB_MAX_RATIO\)"),
    ("beside", None, r"over 100 times the archive's"),
    ("bomb", ExtractionLimits(max_total=1 << 20), r"over the cap of 1 MiB "
                                                  r"\(\$LLRNET_HUB_MAX_EXTRACT\)"),
    ("members", ExtractionLimits(max_members=50), r"more than 50 members, over the member cap"),
])
def test_extraction_caps_are_checked_before_writing(
        bombs: dict[str, Path], tmp_path: Path, name: str, limits: ExtractionLimits | None,
        message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    written = []
    original = tarfile.TarFile._extract_member

    def spy(self: tarfile.TarFile, member: tarfile.TarInfo, *args: Any, **kwargs: Any) -> Any:
        written.append(member.name)
        return original(self, member, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "_extract_member", spy)
    with pytest.raises(InputError, match=message):
        extract_archive(bombs[name], tmp_path / "cache" / "module", limits=limits)
    assert written == [] and _cache_dirs(tmp_path / "cache") == []


def test_the_stream_is_not_decompressed_past_the_caps(tmp_path: Path) -> None:
    # a pax header is read whole by tarfile: 8 MiB of it would pass the caps below
    path = tmp_path / "pax.tar.gz"
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("a")
        info.pax_headers = {"comment": "x" * (8 << 20)}
        archive.addfile(info, io.BytesIO(b""))
    limits = ExtractionLimits(max_total=1 << 20, max_members=10, ratio_floor=1 << 20)
    with pytest.raises(InputError, match=r"the uncompressed tar stream passes 1\.02\d* MiB, over "
                                         r"the extraction caps"):
        extract_archive(path, tmp_path / "out", limits=limits)
    assert not (tmp_path / "out").exists()
    assert extract_archive(path, tmp_path / "ok").is_dir()  # the defaults allow it


@pytest.mark.parametrize("name", ["bomb", "beside", "members"])
def test_bombs_local_and_fetched_leave_the_cache_as_it_was(
        server: Server, bombs: dict[str, Path], tmp_path: Path, name: str,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LLRNET_HUB_MAX_MEMBERS", "50")
    local_cache = tmp_path / "extracted"
    monkeypatch.setenv("LLRNET_HUB_CACHE", str(local_cache))
    (local_cache / "kept").mkdir(parents=True)  # what was there stays, alone
    for source in (str(bombs[name]), f"{server.url}/{name}.tar.gz"):
        code, line = _one_line(["inspect-hub", source], capsys)
        assert code == 2 and re.search(r"ratio cap|member cap", line), line
    assert server.hits[f"/{name}.tar.gz"] == 1
    assert _cache_dirs(local_cache) == ["kept"] and _cache() == []


# --- full disks and caches that are files --------------------------------------------

def _full_disk(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_hub_cache_says_so(server: Server, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """ENOSPC is simulated by monkeypatching tarfile's copy (no tmpfs needed)."""
    monkeypatch.setattr(tarfile, "copyfileobj", _full_disk)
    out = tmp_path / "x.safetensors"
    code, line = _one_line(["import-hub", f"{server.url}/good.tar.gz", "--out", str(out)],
                           capsys)
    assert code == 1 and line == f"llrnet import-hub: error: no space left on device: " \
                                 f"{hub_cache_root()}", line
    assert _cache() == [] and not out.exists()
    local_cache = tmp_path / "extracted"
    monkeypatch.setenv("LLRNET_HUB_CACHE", str(local_cache))
    code, line = _one_line(["inspect-hub", str(FIXTURES / "dm_linear.tar.gz")], capsys)
    assert code == 1 and line == f"llrnet inspect-hub: error: no space left on device: " \
                                 f"{local_cache}", line
    assert _cache_dirs(local_cache) == []


def test_a_full_disk_during_the_download_says_so(server: Server, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import llrnet.hub.remote.download as download_module

    real_open = open

    def full_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(path, mode, *args, **kwargs)
        if "w" in mode and str(path).endswith("module.tar.gz"):
            setattr(handle, "write", _full_disk)  # noqa: B010
        return handle

    monkeypatch.setattr(download_module, "open", full_open, raising=False)
    with pytest.raises(OSError, match=r"no space left on device") as raised:
        fetch_module(from_url(f"{server.url}/good.tar.gz"), policy=FAST, progress=False)
    assert raised.value.errno == errno.ENOSPC
    assert raised.value.filename == str(hub_cache_root())
    assert server.hits["/good.tar.gz"] == 1 and _cache() == []


@pytest.mark.parametrize("variable", ["TFHUB_CACHE_DIR", "LLRNET_CACHE", "LLRNET_HUB_CACHE"])
def test_a_cache_variable_naming_a_file_is_one_clear_line(
        server: Server, tmp_path: Path, variable: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "a_file"
    file.write_text("not a folder\n")
    monkeypatch.setenv(variable, str(file))
    source = (str(FIXTURES / "dm_linear.tar.gz") if variable == "LLRNET_HUB_CACHE"
              else f"{server.url}/good.tar.gz")
    code, line = _one_line(["inspect-hub", source], capsys)
    assert code == 2, line
    assert re.search(rf"the (module|extraction) cache .* \(chosen by \${variable}\) is not a "
                     rf"folder: {re.escape(str(file))} is a file", line), line
    assert "File exists" not in line and file.read_text() == "not a folder\n"
    assert sum(server.hits.values()) == 0


def test_a_full_disk_at_the_descriptor_leaves_no_module(server: Server,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("llrnet.hub.remote.cache.atomic_write_text", _full_disk)
    with pytest.raises(OSError, match=r"no space left on device") as raised:
        fetch_module(from_url(f"{server.url}/good.tar.gz"), policy=FAST, progress=False)
    assert raised.value.filename == str(hub_cache_root()) and _cache() == []


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("LLRNET_MIN_RATE", "fast", r"\$LLRNET_MIN_RATE must be a number, got 'fast'"),
    ("LLRNET_MIN_RATE", "-1", r"\$LLRNET_MIN_RATE must be >= 0, got '-1'"),
    ("LLRNET_HUB_MAX_MEMBERS", "0", r"\$LLRNET_HUB_MAX_MEMBERS must be > 0, got '0'"),
    ("LLRNET_HUB_MAX_RATIO", "1e", r"\$LLRNET_HUB_MAX_RATIO must be a number, got '1e'"),
])
def test_a_bad_limit_variable_is_named(variable: str, value: str, message: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(UsageError, match=message):
        if variable.startswith("LLRNET_HUB"):
            ExtractionLimits.from_env()
        else:
            TransferLimits.from_env(None, env="LLRNET_UNSET_FOR_TEST", default=1 << 20)
