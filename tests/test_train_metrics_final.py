"""metrics.jsonl: the final evaluation is one record of its own, also after a resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from llrnet.train import loop, train
from llrnet.train.logging import read_metrics
from test_train_loop import tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_resume_after_the_final_evaluation_logs_it_once(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny("eval.every=4")
    straight = train(config, tmp_path / "straight", progress=False)

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # after the final evaluation, before the weights

    with monkeypatch.context() as patch:
        patch.setattr(loop, "_write_final_weights", killed)
        with pytest.raises(KeyboardInterrupt):
            train(config, tmp_path / "cut", progress=False)
    assert [r["step"] for r in read_metrics(tmp_path / "cut") if r.get("final")] == [8]
    resumed = train(config, tmp_path / "cut", resume=True, progress=False)
    assert resumed.finished and resumed.metrics == straight.metrics

    records = read_metrics(tmp_path / "cut")
    final = [r for r in records if r.get("final")]
    assert len(final) == 1 and final[0]["step"] == 8
    assert final[0] == {"step": 8, "final": True,
                        **{f"eval/{k}": v for k, v in resumed.metrics.items()}}
    assert [r["step"] for r in records if "eval/pgd_accuracy" in r] == [4, 8]
    # Apart from times, the resumed file is the uninterrupted one.
    def untimed(path: Path) -> list[dict[str, object]]:
        return [{k: v for k, v in r.items() if k != "images_per_second"}
                for r in read_metrics(path)]

    assert untimed(tmp_path / "cut") == untimed(tmp_path / "straight")
