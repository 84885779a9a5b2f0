"""``hf-hub:owner/repo[@revision]`` weights, served by a Hub on 127.0.0.1 (tests/hf_helpers.py).

Loading: download, then an offline reload from huggingface_hub's cache (no request), a
pinned revision, ``create_model(name, pretrained="hf-hub:...")``; failures: a missing
repository, revision or file (404), an HTML page, a truncated transfer, a truncated file,
a tampered tensor, a file without an llrnet record, a config.json naming another
architecture, offline without a cached copy, huggingface_hub not installed. Through the CLI
each is one stderr line, exit 2, and nothing at the output path.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from hf_helpers import FakeHub, hub_environment, serving, use_hub
from llrnet.cli import main
from llrnet.core.errors import UsageError, WeightsError
from llrnet.models import create_model, load_weights, read_metadata, save_weights
from llrnet.models.hf_hub import load_hf_weights, parse_hf_name
from model_helpers import constant_bird_weights

pytestmark = pytest.mark.usefixtures("one_thread")


def _weights(path: Path, bird_logit: float = 1.5) -> Path:
    """A tiny bird-or-bicycle classifier whose bird logit is ``bird_logit`` on every image."""
    return constant_bird_weights(path, bird_logit)


def _config(architecture: str = "llr_pretrain_adv_tiny") -> bytes:
    return json.dumps({"architecture": architecture}).encode()


def _tampered(data: bytes) -> bytes:
    """``data`` with the last tensor byte changed (header, record and hash kept)."""
    changed = bytearray(data)
    changed[-1] ^= 0x01
    return bytes(changed)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with serving() as server:
        use_hub(monkeypatch, server, tmp_path / "hf")
        yield server


@pytest.fixture
def good(tmp_path: Path) -> bytes:
    return _weights(tmp_path / "good.safetensors").read_bytes()


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, list[str]]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def _image(tmp_path: Path) -> Path:
    path = tmp_path / "a.png"
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(path)
    return path


def test_names_parse_and_bad_ones_are_usage_errors() -> None:
    assert parse_hf_name("hf-hub:me/model").revision is None
    name = parse_hf_name("hf-hub:me/model@v1.0")
    assert (name.repo_id, name.revision, str(name)) == ("me/model", "v1.0", "hf-hub:me/model@v1.0")
    for bad in ("hf-hub:", "hf-hub:model", "hf-hub:me/model@", "hf-hub:a/b/c", "me/model"):
        with pytest.raises(UsageError, match="hf-hub:owner/repo"):
            parse_hf_name(bad)


def test_download_then_offline_reload_from_the_cache(hub: FakeHub, good: bytes,
                                                     tmp_path: Path) -> None:
    commit = hub.repo("me/bird").push({"model.safetensors": good, "config.json": _config()})
    model = load_weights("hf-hub:me/bird")
    local = load_weights(tmp_path / "good.safetensors")
    assert model.llrnet_metadata["hub"] == {"name": "hf-hub:me/bird", "repo_id": "me/bird",
                                            "revision": None, "commit": commit}
    for (key, a), (_, b) in zip(model.state_dict().items(), local.state_dict().items()):
        assert torch.equal(a, b), key
    cached = list((tmp_path / "hf" / "hub").glob("models--me--bird/snapshots/*/model.safetensors"))
    assert [p.read_bytes() == good for p in cached] == [True]
    # the weights went through the redirect to the CDN, HEAD then GET
    assert ("GET", f"/blobs/{hashlib.sha256(good).hexdigest()}") in hub.requests

    hub.requests.clear()
    again = load_hf_weights("hf-hub:me/bird", offline=True)
    assert hub.requests == []
    assert again.llrnet_metadata["hub"]["commit"] == commit
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(again(x), local(x))


def test_hf_hub_offline_environment_variable_reads_the_cache(
        hub: FakeHub, good: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.repo("me/bird").push({"model.safetensors": good})
    load_weights("hf-hub:me/bird")
    hub.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # set after huggingface_hub was imported
    assert read_metadata("hf-hub:me/bird")["architecture"] == "llr_pretrain_adv_tiny"
    assert hub.requests == []
    with pytest.raises(WeightsError, match=r"not in the Hugging Face cache .* HF_HUB_OFFLINE"):
        load_weights("hf-hub:me/never-fetched")


def test_pinned_revision_loads_that_commit(hub: FakeHub, tmp_path: Path) -> None:
    old = _weights(tmp_path / "old.safetensors", 1.0).read_bytes()
    new = _weights(tmp_path / "new.safetensors", -1.0).read_bytes()
    repo = hub.repo("me/bird")
    first = repo.push({"model.safetensors": old})
    repo.push({"model.safetensors": old}, branch="v1")
    repo.push({"model.safetensors": new})
    x = torch.rand(1, 3, 32, 32)
    for name, logit in (("hf-hub:me/bird", -1.0), (f"hf-hub:me/bird@{first}", 1.0),
                        ("hf-hub:me/bird@v1", 1.0)):
        model = load_weights(name)
        assert model.bird_logit(x).item() == pytest.approx(logit), name
    assert load_weights(f"hf-hub:me/bird@{first}").llrnet_metadata["hub"]["commit"] == first


def test_create_model_with_a_hub_name(hub: FakeHub, good: bytes) -> None:
    hub.repo("me/bird").push({"model.safetensors": good})
    model = create_model("llr_pretrain_adv_tiny", pretrained="hf-hub:me/bird")
    assert model.bird_logit(torch.rand(1, 3, 32, 32)).item() == pytest.approx(1.5)
    with pytest.raises(WeightsError, match="holds 'llr_pretrain_adv_tiny', not 'digits_wrn'"):
        create_model("digits_wrn", pretrained="hf-hub:me/bird")
    with pytest.raises(UsageError, match="no arguments"):
        create_model("llr_pretrain_adv_tiny", pretrained="hf-hub:me/bird", stem_width=4)
    with pytest.raises(UsageError, match="pretrained must be"):
        create_model("llr_pretrain_adv_tiny", pretrained="me/bird")
    with pytest.raises(UsageError, match="unknown"):
        create_model("no_such_model", pretrained="hf-hub:me/bird")


def test_repository_errors_are_weights_errors_in_our_words(hub: FakeHub, good: bytes,
                                                           tmp_path: Path) -> None:
    repo = hub.repo("me/bird")
    repo.push({"model.safetensors": good})
    hub.repo("me/empty").push({"config.json": _config()})
    hub.repo("me/other").push({"model.safetensors": good, "config.json": _config("digits_wrn")})
    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, str(bare))
    hub.repo("me/bare").push({"model.safetensors": bare.read_bytes()})
    cases = {
        "hf-hub:me/nothing": "no such model repository",
        "hf-hub:me/bird@v9": "has no revision 'v9'",
        "hf-hub:me/empty": "has no model.safetensors",
        "hf-hub:me/other": "config.json names architecture 'digits_wrn' but model.safetensors "
                           "holds 'llr_pretrain_adv_tiny'",
        "hf-hub:me/bare": r"hf-hub:me/bare \(commit [0-9a-f]{12}\) has no llrnet metadata record",
    }
    for name, message in cases.items():
        with pytest.raises(WeightsError, match=message):
            load_weights(name)


def test_without_huggingface_hub_the_error_names_the_extra(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(UsageError, match=r"pip install 'llrnet\[hf\]'"):
        load_weights("hf-hub:me/bird")
    code, stdout, errors = _cli(capsys, "info", "hf-hub:me/bird")
    assert (code, stdout) == (2, "")
    assert errors == ["llrnet info: error: hf-hub: names need the package huggingface_hub: "
                      "pip install 'llrnet[hf]'"]


def _broken_repos(hub: FakeHub, good: bytes) -> dict[str, str]:
    """Repository name -> the one stderr line's expected text (``info`` reads the record
    only, as for a local file, so it does not see the tampered tensor)."""
    html = b"<!DOCTYPE html><html><body>Sign in to continue</body></html>\n"
    hub.repo("me/html").push({"model.safetensors": html})
    truncated = hub.repo("me/cut-transfer")
    truncated.push({"model.safetensors": good})
    truncated.short["model.safetensors"] = 100  # the CDN stops 100 bytes early
    hub.repo("me/cut-file").push({"model.safetensors": good[:-100]})
    hub.repo("me/tampered").push({"model.safetensors": _tampered(good)})
    return {
        "hf-hub:me/nothing": "no such model repository",
        "hf-hub:me/html": "model.safetensors is an HTML page, not a weights file",
        "hf-hub:me/cut-transfer": "model.safetensors could not be downloaded: Consistency "
                                  "check failed",
        "hf-hub:me/cut-file": "is not a valid safetensors file",
        "hf-hub:me/tampered": r"hf-hub:me/tampered \(commit [0-9a-f]{12}\): tensor sha256 "
                              r".* does not match the record",
    }


def test_cli_failures_are_one_line_and_leave_nothing(
        hub: FakeHub, good: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = _image(tmp_path)
    for name, message in _broken_repos(hub, good).items():
        out = tmp_path / "eval_out"
        for argv in (["predict", str(image), "--weights", name],
                     ["eval", "--suite", "digits", "--weights", name, "--out", str(out),
                      "--max-images", "2", "--attacks", "clean", "--no-progress"],
                     *([["info", name]] if name != "hf-hub:me/tampered" else [])):
            code, stdout, errors = _cli(capsys, *argv)
            assert code == 2, (argv, errors)
            assert stdout == ""
            assert len(errors) == 1, (argv, errors)
            assert errors[0].startswith(f"llrnet {argv[0]}: error: ")
            assert re.search(message, errors[0]), (argv, errors)
            assert not out.exists()


def test_cli_offline_without_a_copy_is_one_line(
        hub: FakeHub, good: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    hub.repo("me/bird").push({"model.safetensors": good})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, errors = _cli(capsys, "predict", str(_image(tmp_path)), "--weights",
                           "hf-hub:me/bird")
    assert code == 2
    assert len(errors) == 1 and "HF_HUB_OFFLINE is set; fetch it once online" in errors[0]
    assert hub.requests == []


def test_cli_predict_from_the_hub_matches_the_local_file(
        hub: FakeHub, good: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hub.repo("me/bird").push({"model.safetensors": good})
    image = str(_image(tmp_path))
    local = str(tmp_path / "good.safetensors")
    results = []
    for weights in (local, "hf-hub:me/bird"):
        code, stdout, errors = _cli(capsys, "predict", image, "--weights", weights, "--json")
        assert (code, errors) == (0, [])
        results.append(json.loads(stdout))
    assert results[0] == results[1]
    assert results[1]["bird_logit"] == pytest.approx(1.5, abs=1e-6)


def test_subprocess_cli_uses_hf_endpoint_and_hf_hub_offline(hub: FakeHub, good: bytes,
                                                            tmp_path: Path) -> None:
    """The variables as a user sets them (huggingface_hub reads them at import), through
    ``python -m llrnet``: stdout only, no log line of the HTTP client on stderr."""
    commit = hub.repo("me/bird").push({"model.safetensors": good})
    home = tmp_path / "subprocess-hf"
    command = [sys.executable, "-m", "llrnet", "info", "hf-hub:me/bird", "--json"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    online = subprocess.run(command, capture_output=True, text=True,
                            env={**env, **hub_environment(hub, home)}, timeout=120)
    assert (online.returncode, online.stderr) == (0, "")
    assert json.loads(online.stdout)["architecture"] == "llr_pretrain_adv_tiny"
    assert list(home.glob(f"hub/models--me--bird/snapshots/{commit}/model.safetensors"))
    hub.requests.clear()
    offline = subprocess.run(command, capture_output=True, text=True,
                             env={**env, **hub_environment(hub, home, offline=True)},
                             timeout=120)
    assert (offline.returncode, offline.stderr) == (0, "")
    assert offline.stdout == online.stdout
    assert hub.requests == []


def test_cli_eval_from_the_hub(hub: FakeHub, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    model = create_model("digits_wrn")
    save_weights(model, tmp_path / "digits.safetensors")
    hub.repo("me/digits").push({"model.safetensors": (tmp_path / "digits.safetensors")
                                .read_bytes(), "config.json": _config("digits_wrn")})
    scores = []
    for weights in (str(tmp_path / "digits.safetensors"), "hf-hub:me/digits"):
        out = tmp_path / f"out{len(scores)}"
        code, _, errors = _cli(capsys, "eval", "--suite", "digits", "--weights", weights,
                               "--out", str(out), "--max-images", "4", "--attacks", "clean",
                               "--no-progress")
        assert (code, errors) == (0, [])
        scores.append(json.loads((out / "results.json").read_text())["attacks"]["clean"])
    assert scores[0]["error_indices"] == scores[1]["error_indices"]
    assert scores[0]["accuracy@100"] == scores[1]["accuracy@100"]
