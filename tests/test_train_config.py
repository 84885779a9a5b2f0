"""Configuration: presets, inheritance, typed overrides, the resolved record."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from llrnet.core.coerce import from_mapping
from llrnet.core.errors import UsageError
from llrnet.train import (
    DATASETS,
    TASKS,
    TaskConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    list_presets,
    load_config,
)
from llrnet.train.build import build_task
from llrnet.train.config import FREE_FORM_KEYS, flatten
from llrnet.train.presets import dump_config, parse_override, preset_values

REQUIRED = {
    "cifar10_wrn28x8_llr", "cifar10_wrn28x8_pgd", "cifar10_wrn28x8_trades",
    "imagenet_resnet152_llr4", "bird_or_bicycle_adv",
    "digits_standard", "digits_pgd", "digits_llr", "digits10_llr", "digits_llr_adv",
}
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_every_required_preset_ships_and_builds_its_task() -> None:
    assert set(list_presets()) >= REQUIRED
    for name in list_presets():
        config = load_config(name)
        task = build_task(config.task)
        assert callable(task), name
        assert config.description, f"{name} has no description"


def test_presets_document_their_source() -> None:
    for name in list_presets():
        text = (CONFIGS / f"{name}.yaml").read_text()
        header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
        assert "Source" in header or "source" in header, name


def test_top_level_configs_are_the_packaged_ones() -> None:
    import llrnet

    packaged = Path(llrnet.__file__).parent / "configs"
    assert CONFIGS.resolve() == packaged.resolve()


def test_official_llr_configuration_matches_the_spec() -> None:
    config = load_config("cifar10_wrn28x8_llr")
    assert (config.batch_size, config.steps) == (64, 100_000)
    assert config.model.name == "wrn_28_8_softplus"
    assert (config.optim.name, config.optim.lr, config.optim.momentum) == ("sgd", 0.1, 0.9)
    assert config.optim.nesterov is False
    assert (config.optim.schedule, config.optim.milestones) == ("step", [80_000, 88_000, 96_000])
    assert config.optim.weight_decay == 2e-4
    assert config.data.augment == "flip_crop"
    options = config.task.options
    assert options["eps"] == pytest.approx(8 / 255)
    assert (options["steps"], options["lam"], options["mu"], options["nominal_weight"]) == (
        10, 4.0, 0.3, 2.0)
    assert options["warmup_steps"] == 500
    assert (config.eval.loss, config.eval.steps) == ("margin", 50)
    for baseline in ("cifar10_wrn28x8_pgd", "cifar10_wrn28x8_trades"):
        other = load_config(baseline)
        assert (other.steps, other.batch_size, other.optim) == (
            config.steps, config.batch_size, config.optim)


def test_extends_merges_nested_sections() -> None:
    base, pgd = load_config("digits_standard"), load_config("digits_pgd")
    assert pgd.task.name == "pgd" and base.task.name == "standard"
    assert pgd.model == base.model and pgd.optim == base.optim and pgd.steps == base.steps
    assert "extends" not in preset_values("digits_pgd")


def test_overrides_are_typed() -> None:
    config = load_config("digits_llr", [
        "steps=7", "optim.lr=1", "optim.milestones=[2, 4]", "ema_decay=0.9",
        "optim.betas=[0.8, 0.9]", "model.kwargs.width=2", "task.options.steps=3",
        "optim.grad_clip=null", "data.augment=crop", "description=hello world",
    ])
    assert config.steps == 7
    assert config.optim.lr == 1.0 and isinstance(config.optim.lr, float)
    assert config.optim.milestones == [2, 4] and config.optim.betas == (0.8, 0.9)
    assert config.ema_decay == 0.9 and config.optim.grad_clip is None
    assert config.model.kwargs == {"width": 2}
    assert config.task.options["steps"] == 3 and config.task.options["eps"] == 0.1
    assert config.description == "hello world"
    assert parse_override("a.b={x: 1}") == (["a", "b"], {"x": 1})


def test_resolved_config_round_trips_through_yaml(tmp_path: Path) -> None:
    config = load_config("cifar10_wrn28x8_llr", ["optim.betas=[0.5, 0.6]"])
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(config))
    assert load_config(str(path)) == config
    assert config_from_dict(yaml.safe_load(dump_config(config))) == config
    assert config_to_dict(TrainConfig()) == config_to_dict(config_from_dict({}))


def test_free_form_keys_come_from_the_schema_and_stay_whole() -> None:
    assert sorted(FREE_FORM_KEYS) == ["model.kwargs", "task.options"]
    flat = flatten({"model": {"name": "m", "kwargs": {"width": 2}}, "optim": {"lr": 0.1}})
    assert flat == {"model.name": "m", "model.kwargs": {"width": 2}, "optim.lr": 0.1}


def test_dataset_and_task_names_come_from_their_registries() -> None:
    assert DATASETS.names() == ["bird_or_bicycle", "cifar10", "digits10", "digits2", "imagenet"]
    with pytest.raises(UsageError, match=r"data\.name: 'mnist' is not one of 'bird_or_bicycle', "
                                         r"'cifar10', 'digits10', 'digits2', 'imagenet'"):
        config_from_dict({"data": {"name": "mnist"}})
    assert TASKS.names() == ["llr", "pgd", "standard", "trades"]
    for name in TASKS.names():
        task = build_task(TaskConfig(name=name))
        assert isinstance(task, TASKS.get(name))


@dataclass
class Inner:
    rate: float = 1.0
    pair: tuple[int, int] = (1, 2)


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)
    limit: int | None = None


def test_coercion_checks_nested_dataclasses_by_annotation() -> None:
    built = from_mapping(Outer, {"inner": {"rate": 2, "pair": [3, 4]}, "tags": ["a"]})
    assert built == Outer(Inner(2.0, (3, 4)), ["a"], None)
    assert isinstance(built.inner.rate, float)
    with pytest.raises(UsageError, match=r"inner\.pair\[1\]: expected an integer, got 'x'"):
        from_mapping(Outer, {"inner": {"pair": [1, "x"]}})
    with pytest.raises(UsageError, match="unknown key 'size' in inner; valid keys: pair, rate"):
        from_mapping(Outer, {"inner": {"size": 1}})
    with pytest.raises(UsageError, match="limit: expected an integer, got 'many'"):
        from_mapping(Outer, {"limit": "many"})
