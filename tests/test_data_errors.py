"""Error paths of llrnet.data: each raises with an actionable message."""

from __future__ import annotations

from pathlib import Path

import pytest

from llrnet.cli import main
from llrnet.core.errors import InputError, RunError, UsageError
from llrnet.core.http import RetryPolicy
from llrnet.data import digits, two_class_digits
from llrnet.data.folders import CIFAR10, imagenet


def test_digits_unknown_split() -> None:
    with pytest.raises(UsageError, match="unknown digits split 'validation'"):
        digits("validation")  # type: ignore[arg-type]


def test_digits_bad_classes_and_size() -> None:
    with pytest.raises(UsageError, match="exactly two classes"):
        two_class_digits("train", classes=(1, 2, 3))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="distinct digits"):
        two_class_digits("train", classes=(3, 3))
    with pytest.raises(UsageError, match=r"digits 0\.\.9"):
        two_class_digits("train", classes=(3, 12))
    with pytest.raises(UsageError, match="positive integer"):
        two_class_digits("train", size=0)


def test_bird_or_bicycle_missing_root_names_the_download_command(tmp_path: Path) -> None:
    from llrnet.data.bird_or_bicycle import BirdOrBicycle

    with pytest.raises(FileNotFoundError,
                       match=r"llrnet data download --root .*nowhere --splits test"):
        BirdOrBicycle(tmp_path / "nowhere", "test")
    with pytest.raises(UsageError, match="unknown bird-or-bicycle split 'val'"):
        BirdOrBicycle(tmp_path, "val")


def test_download_rejects_bad_arguments_before_any_request(tmp_path: Path) -> None:
    from llrnet.data.bird_or_bicycle import download

    with pytest.raises(UsageError, match=r"unknown splits \['valid'\]"):
        download(tmp_path, "train,valid")
    with pytest.raises(UsageError, match="workers must be >= 1"):
        download(tmp_path, "test", workers=0)
    assert not any(tmp_path.iterdir())


def test_cli_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "download", "--root", str(tmp_path), "--splits", "dev"]) == 2
    assert "unknown splits ['dev']" in capsys.readouterr().err
    assert main(["data", "download", "--root", str(tmp_path), "--retries", "-1"]) == 2
    assert "--retries must be >= 0" in capsys.readouterr().err
    assert main(["data", "verify", "--root", str(tmp_path), "--split", "nope"]) == 2


def test_retry_policy_validation() -> None:
    with pytest.raises(ValueError, match="timeout must be > 0"):
        RetryPolicy(timeout=0)
    with pytest.raises(ValueError, match="attempts must be >= 1"):
        RetryPolicy(attempts=0)


def test_imagenet_and_cifar_missing_or_bad(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"ImageNet val folder not found"):
        imagenet(tmp_path, "val")
    with pytest.raises(UsageError, match="unknown ImageNet split 'test'"):
        imagenet(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10 not found under .*download=True"):
        CIFAR10(tmp_path, "train")
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name in [f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]:
        (folder / name).write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="is not a CIFAR-10 binary batch"):
        CIFAR10(tmp_path, "test")
    with pytest.raises(UsageError, match="unknown CIFAR-10 split"):
        CIFAR10(tmp_path, "val")


def test_select_extras_bad_csv() -> None:
    from llrnet.data.bird_or_bicycle import select_extras

    with pytest.raises(InputError, match=r"box CSV header lacks columns \['XMin'"):
        select_extras(["ImageID,LabelName,XMax,YMin,YMax"], {})
    with pytest.raises(InputError, match="box CSV line 2 is malformed"):
        select_extras(["ImageID,LabelName,XMin,XMax,YMin,YMax",
                       "0000000000000001,/m/015p6,zero,1,0,1"], {})


def test_id_list_with_a_bad_line() -> None:
    from llrnet.data.bird_or_bicycle.idlists import parse_id_list

    with pytest.raises(RunError, match="bird id list line 2 is not a 16-hex id"):
        parse_id_list(b"0123456789abcdef\n<html>\n", "bird")
