"""A FIFO (or a device) where an image file is expected is refused at once, never read."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llrnet.cli import main
from llrnet.core.errors import InputError
from llrnet.core.fileio import NotRegularFileError, open_regular_file
from llrnet.data.bird_or_bicycle import BirdOrBicycle
from llrnet.data.robust import find_unreadable
from llrnet.inference import load_image, predict_images
from llrnet.models import load_weights
from model_helpers import constant_bird_weights
from test_cli_models import _image
from test_data_bird_or_bicycle import make_split

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")


def returns(call: Callable[[], Any]) -> Any:
    """``call()``, run in a thread so that a read that blocks fails the test instead of
    hanging it; its result, or the exception it raised."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(call())
        except BaseException as error:  # handed back to the test
            outcome.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(120)  # a guard against hanging, not a speed check
    assert outcome, "the call blocked on the FIFO"
    return outcome[0]


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def test_open_regular_file_names_what_it_refuses(tmp_path: Path) -> None:
    pipe = fifo(tmp_path / "x.jpg")
    error = returns(lambda: open_regular_file(pipe))
    assert isinstance(error, NotRegularFileError) and "is a FIFO" in str(error)
    assert "is a character device" in str(returns(lambda: open_regular_file("/dev/null")))
    assert "is a folder" in str(returns(lambda: open_regular_file(tmp_path)))
    regular = tmp_path / "a.bin"
    regular.write_bytes(b"abc")
    (tmp_path / "link.bin").symlink_to(regular)
    with open_regular_file(tmp_path / "link.bin") as handle:
        assert handle.read() == b"abc"
    with pytest.raises(FileNotFoundError):
        open_regular_file(tmp_path / "missing.jpg")


def test_load_image_refuses_a_fifo_named_jpg(tmp_path: Path) -> None:
    error = returns(lambda: load_image(fifo(tmp_path / "x.jpg")))
    assert isinstance(error, InputError)
    assert str(error) == (f"{tmp_path / 'x.jpg'}: is a FIFO, not a regular file; refused "
                          "(an image must be a file)")


def test_predict_scores_the_files_and_refuses_the_fifo(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = constant_bird_weights(tmp_path / "w.safetensors", 2.0)
    good = _image(tmp_path / "a.png")
    pipe = fifo(tmp_path / "x.jpg")
    predictions, failures = returns(
        lambda: predict_images(load_weights(weights), [good, pipe]))
    assert [p.path for p in predictions] == [good.as_posix()]
    assert "is a FIFO, not a regular file" in failures[str(pipe)]
    code = returns(lambda: main(["predict", str(pipe), "--weights", str(weights)]))
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "is a FIFO, not a regular file" in err


def test_a_fifo_inside_a_data_folder_is_refused(tmp_path: Path) -> None:
    make_split(tmp_path, "test", 2, size=40)
    pipe = fifo(tmp_path / "0.0.4/test/bird/bi00000000000099.jpg")
    assert "is a FIFO" in returns(lambda: find_unreadable([pipe]))[str(pipe)]
    error = returns(lambda: BirdOrBicycle(tmp_path, "test", strict=True))
    assert isinstance(error, InputError) and "1 unreadable image(s)" in str(error)
    assert "is a FIFO, not a regular file" in str(error)
    lenient = returns(lambda: BirdOrBicycle(tmp_path, "test"))
    with pytest.warns(UserWarning, match="is a FIFO"):
        returns(lambda: lenient[len(lenient) - 1])
