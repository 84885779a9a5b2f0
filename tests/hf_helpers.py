"""A Hugging Face Hub on 127.0.0.1 for offline tests: the ``resolve`` endpoint and a CDN.

``GET``/``HEAD /{owner}/{repo}/resolve/{revision}/{filename}`` answers as the Hub does:

* a small file (``config.json``): 200 with ``ETag``, ``X-Repo-Commit`` and
  ``Content-Length``;
* ``*.safetensors`` (an LFS file): 302 to the CDN (another port, so another origin) with
  ``X-Repo-Commit``, ``X-Linked-Etag`` and ``X-Linked-Size`` (huggingface_hub 2.5's
  ``get_hf_file_metadata`` reads these from the redirect and stops there); the CDN serves
  the bytes;
* an unknown repository, revision or file: 404 with ``X-Error-Code`` ``RepoNotFound``,
  ``RevisionNotFound`` or ``EntryNotFound``.

huggingface_hub reads ``HF_ENDPOINT``, ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` once, at
import (``huggingface_hub.constants``); :func:`use_hub` patches those constants for
in-process tests, and :func:`hub_environment` gives a subprocess the variables.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Repo:
    """One repository: branch -> commit, and commit -> {filename: bytes}."""

    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    short: dict[str, int] = field(default_factory=dict)  # filename -> bytes the CDN withholds

    def push(self, files: dict[str, bytes], *, branch: str = "main") -> str:
        """Commit ``files`` (the whole tree) on ``branch``; its 40-hex commit id."""
        digest = hashlib.sha1(repr(sorted((k, hashlib.sha256(v).hexdigest())
                                          for k, v in files.items())).encode())
        digest.update(str(len(self.commits)).encode())
        commit = digest.hexdigest()
        self.commits[commit] = dict(files)
        self.refs[branch] = commit
        return commit


class FakeHub:
    """The Hub (``url``) and its CDN, each a threading HTTP server on 127.0.0.1."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path), both servers
        self._hub = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(self._resolve))
        self._cdn = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(self._serve_blob))
        self.url = f"http://127.0.0.1:{self._hub.server_address[1]}"
        self.cdn = f"http://127.0.0.1:{self._cdn.server_address[1]}"
        self._threads = [threading.Thread(target=s.serve_forever, daemon=True)
                         for s in (self._hub, self._cdn)]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        for server in (self._hub, self._cdn):
            server.shutdown()
            server.server_close()

    def repo(self, repo_id: str) -> Repo:
        return self.repos.setdefault(repo_id, Repo())

    def upload_folder(self, repo_id: str, folder: Path, *, branch: str = "main") -> str:
        """What ``hf upload repo_id folder`` does: every file of ``folder``, one commit."""
        files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
        return self.repo(repo_id).push(files, branch=branch)

    # --- the two servers -------------------------------------------------------------

    def _handler(self, answer: Any) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                hub.requests.append(("HEAD", self.path))
                answer(self, body=False)

            def do_GET(self) -> None:
                hub.requests.append(("GET", self.path))
                answer(self, body=True)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str],
               data: bytes, body: bool) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if body:
            handler.wfile.write(data)

    def _resolve(self, handler: BaseHTTPRequestHandler, *, body: bool) -> None:
        parts = handler.path.split("?")[0].split("/")
        # ['', owner, repo, 'resolve', revision, filename]
        if len(parts) != 6 or parts[3] != "resolve":
            return self._reply(handler, 404, {}, b"not found", body)
        repo_id, revision, filename = f"{parts[1]}/{parts[2]}", parts[4], parts[5]
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._reply(handler, 404, {"X-Error-Code": "RepoNotFound"},
                               b"Repository not found", body)
        commit = repo.refs.get(revision, revision if revision in repo.commits else None)
        if commit is None:
            return self._reply(handler, 404, {"X-Error-Code": "RevisionNotFound"},
                               b"Invalid rev id", body)
        data = repo.commits[commit].get(filename)
        if data is None:
            return self._reply(handler, 404, {"X-Error-Code": "EntryNotFound",
                                              "X-Repo-Commit": commit}, b"Entry not found", body)
        sha = hashlib.sha256(data).hexdigest()
        if not filename.endswith(".safetensors"):
            return self._reply(handler, 200, {"ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                                              "X-Repo-Commit": commit}, data, body)
        self.blobs[sha] = data[:len(data) - repo.short.get(filename, 0)]
        self._reply(handler, 302, {"Location": f"{self.cdn}/blobs/{sha}",
                                   "X-Repo-Commit": commit, "ETag": f'"{sha}"',
                                   "X-Linked-Etag": f'"{sha}"',
                                   "X-Linked-Size": str(len(data))}, b"", body)

    def _serve_blob(self, handler: BaseHTTPRequestHandler, *, body: bool) -> None:
        sha = handler.path.rsplit("/", 1)[-1]
        data = self.blobs.get(sha)
        if data is None:
            return self._reply(handler, 404, {}, b"no such blob", body)
        self._reply(handler, 200, {"ETag": f'"{sha}"'}, data, body)


@contextmanager
def serving() -> Iterator[FakeHub]:
    hub = FakeHub()
    try:
        yield hub
    finally:
        hub.close()


def use_hub(monkeypatch: pytest.MonkeyPatch, hub: FakeHub, home: Path) -> Path:
    """Point this process's huggingface_hub at ``hub``, with its cache under ``home``;
    online. (Progress bars show on a terminal only, so not under pytest.) Returns the
    cache folder."""
    from huggingface_hub import constants

    cache = home / "hub"
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", True)
    return cache


def hub_environment(hub: FakeHub, home: Path, *, offline: bool = False) -> dict[str, str]:
    """The variables a subprocess needs to use ``hub`` with its cache under ``home``."""
    return {"HF_ENDPOINT": hub.url, "HF_HOME": str(home), "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
            "HF_HUB_OFFLINE": "1" if offline else "0"}
