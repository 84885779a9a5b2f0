"""Published .tar.gz modules: sha256 check and safe extraction."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from hub_helpers import FIXTURES, archive_with, module_archive
from llrnet.core.errors import InputError
from llrnet.hub import open_module
from llrnet.hub.formats.archive import extract_archive, file_sha256, known_sha256


def test_archive_opens_like_the_folder(tmp_path: Path) -> None:
    archive = module_archive(tmp_path / "linear.tar.gz")
    digest = file_sha256(archive)
    module = open_module(archive, cache_dir=tmp_path / "cache", expected_sha256=digest)
    assert module.sha256 == digest and module.sha256_checked
    assert module.path == tmp_path / "cache" / digest[:16]
    assert module.reader.names() == open_module(FIXTURES / "linear").reader.names()
    again = open_module(archive, cache_dir=tmp_path / "cache")  # reuses the extraction
    assert again.path == module.path and not again.sha256_checked


def test_sha256_mismatch_is_refused(tmp_path: Path) -> None:
    archive = module_archive(tmp_path / "linear.tar.gz")
    with pytest.raises(InputError, match=r"linear\.tar\.gz: sha256 [0-9a-f]{64} does not match "
                                         "the expected"):
        open_module(archive, cache_dir=tmp_path / "cache", expected_sha256="ab" * 32)
    assert not (tmp_path / "cache").exists()


def test_known_hash_of_the_published_imagenet_module(tmp_path: Path) -> None:
    published = "12b60e87833b67dc9f0ee8559de16b5a44b6db2cf0398ae633fb2f8eed66f7f3"
    assert known_sha256("/x/deepmind/local-linearity/imagenet/1.tar.gz") == published
    assert known_sha256("deepmind_local-linearity_imagenet_1.tar.gz") == published
    assert known_sha256("other/1.tar.gz") is None
    fake = module_archive(tmp_path / "deepmind_local-linearity_imagenet_1.tar.gz")
    with pytest.raises(InputError, match="not the published module"):
        open_module(fake, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/evil.txt", "a/../../evil.txt"])
def test_path_traversal_is_refused(tmp_path: Path, name: str) -> None:
    archive = archive_with(tmp_path / "bad.tar.gz", tarfile.TarInfo(name), b"x")
    with pytest.raises(InputError, match="path escapes the target folder"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize(("kind", "target"), [(tarfile.SYMTYPE, "../../outside"),
                                              (tarfile.SYMTYPE, "/etc/passwd"),
                                              (tarfile.LNKTYPE, "../outside")])
def test_links_out_of_the_target_are_refused(tmp_path: Path, kind: bytes, target: str) -> None:
    member = tarfile.TarInfo("variables/link")
    member.type = kind
    member.linkname = target
    archive = archive_with(tmp_path / "bad.tar.gz", member)
    with pytest.raises(InputError, match="points outside the target folder"):
        extract_archive(archive, tmp_path / "out")


def test_devices_and_corrupt_archives_are_refused(tmp_path: Path) -> None:
    member = tarfile.TarInfo("dev")
    member.type = tarfile.CHRTYPE
    with pytest.raises(InputError, match="not a regular file or folder"):
        extract_archive(archive_with(tmp_path / "dev.tar.gz", member), tmp_path / "out")
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(InputError, match="not a readable tar archive"):
        extract_archive(broken, tmp_path / "out2")


def test_cli_imports_an_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    from llrnet.cli import main
    from llrnet.models import read_metadata

    monkeypatch.setenv("LLRNET_HUB_CACHE", str(tmp_path / "cache"))
    archive = module_archive(tmp_path / "cifar10.tar.gz", "cifar10")
    digest = file_sha256(archive)
    out = tmp_path / "wrn.safetensors"
    assert main(["import-hub", str(archive), "--arch", "wrn_10_1_softplus", "--out", str(out),
                 "--sha256", digest]) == 0
    source = read_metadata(out)["source"]["module"]
    assert source == {"path": str(archive), "sha256": digest, "sha256_checked": True,
                      "sha256_of": "archive"}
    assert "sha256 matched" in capsys.readouterr().out
    assert main(["inspect-hub", str(archive), "--sha256", "0" * 64]) == 2
    assert "does not match the expected" in capsys.readouterr().err
