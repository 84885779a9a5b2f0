"""The evaluation's own batch size (images per chunk) leaves results.json unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from llrnet.eval import evaluate
from test_eval_runner import suite, tiny_data, tiny_model, without_times

pytestmark = pytest.mark.usefixtures("one_thread")


def test_results_are_identical_for_every_batch_size(tmp_path: Path) -> None:
    data = tiny_data()
    reference = None
    for size in (3, 5, 24):
        evaluate(tiny_model(), suite()[0], data, out_dir=tmp_path / str(size), batch_size=size,
                 progress=False)
        results = without_times(tmp_path / str(size) / "results.json")
        if reference is None:
            reference = results
        assert results == reference, size
