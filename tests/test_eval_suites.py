"""Suites: the challenge's parameters, kinds, selection, custom suites, the registry,
digits end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from llrnet.attacks import PGD, SPSA, Boundary, Chain, Identity, RandomSpatial, SpatialGrid
from llrnet.core.errors import UsageError
from llrnet.eval import Suite, SuiteEntry, evaluate, get_suite, list_suites, register_suite
from llrnet.eval.suites import SUITE_FACTS, SUITES, SuiteFacts, attack_kind, suite_facts

WARM_UP = ["clean", "spatial_grid", "common_corruptions", "spsa_with_random_spatial",
           "boundary_with_random_spatial"]


def test_registered_suites() -> None:
    assert {"bird_or_bicycle", "digits", "linf"} <= set(list_suites())


def test_bird_or_bicycle_has_the_spec_parameters() -> None:
    suite = get_suite("bird_or_bicycle")
    assert suite.names == WARM_UP
    assert suite.shuffle
    entries = {entry.name: entry for entry in suite.entries}
    assert [entries[n].kind for n in WARM_UP] == ["clean", "spatial", "corruption", "black_box",
                                                  "black_box"]
    grid = entries["spatial_grid"].attack
    assert grid.grid_name == "challenge" and grid.transforms.shape == (775, 3)
    assert grid.border_fraction == 0.15
    spatial, spsa = entries["spsa_with_random_spatial"].attack.stages
    assert spatial.limits == (18.0, 18.0, 30.0) and spatial.border == 20
    assert spsa.eps == 16 / 255 and spsa.steps == 200 and spsa.samples == 64
    assert spsa.delta == 0.01 and spsa.lr == 0.01 and spsa.threshold == -1.0
    boundary_entry = entries["boundary_with_random_spatial"]
    assert boundary_entry.max_images == 100 and boundary_entry.needs_pool
    boundary = boundary_entry.attack.stages[1]
    assert boundary.eps == 10.0 and boundary.iterations == 5000 and boundary.max_directions == 25
    assert get_suite("bird_or_bicycle", grid="intended").entries[1].attack.grid_name == "intended"
    assert not any(entry.needs_gradients for entry in suite.entries)


def test_digits_is_scaled_to_small_images() -> None:
    suite = get_suite("digits")
    assert suite.names == WARM_UP
    entries = {entry.name: entry for entry in suite.entries}
    assert entries["spatial_grid"].attack.transforms.shape == (275, 3)  # 5 x 5 x 11
    spsa = entries["spsa_with_random_spatial"].attack.stages[1]
    assert spsa.eps == 0.3
    assert entries["boundary_with_random_spatial"].attack.stages[1].eps == 4.0


def test_linf_suite() -> None:
    suite = get_suite("linf", eps=0.1, steps=10)
    assert suite.names == ["clean", "pgd", "autoattack", "autoattack_rand"]
    assert suite.optional == ("autoattack", "autoattack_rand")
    assert suite.select(None).names == ["clean", "pgd"]  # optional entries only when named
    assert suite.select(["autoattack", "pgd"]).names == ["pgd", "autoattack"]
    pgd = suite.entries[1].attack
    assert pgd.eps == 0.1 and pgd.steps == 10 and pgd.step_size == pytest.approx(0.025)
    assert suite.entries[1].needs_gradients
    assert get_suite("linf", multi_targeted=True).select(None).names == ["clean",
                                                                         "multi_targeted_pgd"]
    with pytest.raises(UsageError, match="eps must be > 0"):
        get_suite("linf", eps=0)


def test_kinds_and_custom_suites() -> None:
    chain = Chain(RandomSpatial(), SPSA(steps=1))
    assert attack_kind(chain) == "black_box"
    assert attack_kind(Identity()) == "clean"
    assert attack_kind(SpatialGrid()) == "spatial"
    assert attack_kind(PGD(0.1, 1, 0.1)) == "white_box"
    suite = Suite.custom([Identity(), chain, Chain(RandomSpatial(), Boundary())])
    assert suite.names == ["clean", "spsa_with_random_spatial", "boundary_with_random_spatial"]
    assert [e.needs_pool for e in suite.entries] == [False, False, True]
    with pytest.raises(UsageError, match="duplicate attack names: clean"):
        Suite.custom([Identity(), Identity()])
    with pytest.raises(UsageError, match="must use only letters"):
        SuiteEntry("a/b", Identity())
    assert suite.select(["boundary_with_random_spatial", "clean"]).names == [
        "clean", "boundary_with_random_spatial"]


def test_an_entrys_kind_comes_from_its_attack() -> None:
    assert SuiteEntry("s", SPSA(steps=1)).kind == "black_box"
    assert SuiteEntry("c", Chain(RandomSpatial(), PGD(0.1, 1, 0.1))).needs_gradients
    assert SuiteEntry("b", Chain(RandomSpatial(), Boundary())).needs_pool
    assert not SuiteEntry("g", SpatialGrid()).needs_pool

    def plain(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **_: object) -> torch.Tensor:
        return x

    # A plain callable declares nothing: white_box (it may need gradients), no pool,
    # unless the entry labels it.
    assert attack_kind(plain) == "white_box"
    assert SuiteEntry("p", plain).kind == "white_box" and not SuiteEntry("p", plain).needs_pool
    assert SuiteEntry("p", plain, kind="corruption").kind == "corruption"
    plain.kind = "black_box"  # type: ignore[attr-defined]
    assert SuiteEntry("p", plain).kind == "black_box"
    plain.kind = "grey_box"  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match=r"has kind 'grey_box'; valid kinds: clean, spatial"):
        SuiteEntry("p", plain)
    with pytest.raises(UsageError, match="kind of p must be one of clean, spatial"):
        SuiteEntry("p", Identity(), kind="grey_box")  # type: ignore[arg-type]


def test_suite_registry_rejects_duplicates_unknown_names_and_positional_builders() -> None:
    with pytest.raises(UsageError, match=r"suite 'linf' is registered twice \(first by "
                                         r"llrnet\.eval\.suite_catalog\.linf\); registered "
                                         r"names: bird_or_bicycle, digits, linf"):
        register_suite("linf")(lambda: get_suite("linf"))

    def positional(eps: float = 0.1) -> Suite:
        return get_suite("linf", eps=eps)

    with pytest.raises(UsageError, match="suite 'mine' must take keyword-only arguments; "
                                         "positional: eps"):
        register_suite("mine")(positional)
    with pytest.raises(UsageError, match=r"unknown suite 'lin'; valid names: bird_or_bicycle, "
                                         r"digits, linf"):
        get_suite("lin")
    assert "mine" not in SUITES and list_suites() == SUITES.names()
    assert SUITES.arguments("linf")["eps"] == 8 / 255



def test_every_registered_suite_carries_its_facts() -> None:
    from llrnet.data import BirdOrBicycle
    from llrnet.data.held_out import HELD_OUT_SETS

    for name in list_suites():
        facts = suite_facts(name)
        assert facts.help.strip() and "\n" not in facts.help, name
        assert facts.data in HELD_OUT_SETS, name
        assert facts.class_names is None or all(isinstance(c, str) for c in facts.class_names)
    assert {name: suite_facts(name).data for name in list_suites()} == {
        "bird_or_bicycle": "bird_or_bicycle", "digits": "digits", "linf": "digits_or_folder",
        "two_class_mnist": "two_class_mnist"}
    assert suite_facts("bird_or_bicycle").class_names == BirdOrBicycle.classes
    assert [suite_facts(n).class_names for n in ("digits", "linf", "two_class_mnist")] == \
        [None, None, None]
    with pytest.raises(UsageError, match=r"unknown suite 'lin'; valid names: bird_or_bicycle"):
        suite_facts("lin")


def test_register_suite_records_facts_and_defaults_them() -> None:
    def probe_a(*, batch_size: int = 4) -> Suite:
        """Probe suite A: one ``clean`` entry.

        More text."""
        return Suite.custom([Identity()], name="probe_a", batch_size=batch_size)

    def probe_b(*, batch_size: int = 4) -> Suite:
        return Suite.custom([Identity()], name="probe_b", batch_size=batch_size)

    try:
        register_suite(probe_a)
        register_suite("probe_b", help="the second probe", data="digits",
                       class_names=("six", "seven"))(probe_b)
        assert suite_facts("probe_a") == SuiteFacts("Probe suite A: one clean entry.",
                                                    "digits_or_folder", None)
        assert suite_facts("probe_b") == SuiteFacts("the second probe", "digits",
                                                    ("six", "seven"))
        assert get_suite("probe_b").names == ["clean"]
        with pytest.raises(UsageError, match="one non-empty line"):
            register_suite("probe_c", help="two\nlines")(probe_b)
        with pytest.raises(UsageError, match=">= 2 classes"):
            register_suite("probe_c", class_names=("one",))(probe_b)
        with pytest.raises(UsageError, match="'probe_b' is registered twice"):
            register_suite("probe_b", help="again")(probe_a)
        assert "probe_c" not in SUITES and "probe_c" not in SUITE_FACTS
        assert suite_facts("probe_b").help == "the second probe"  # the failed one changed nothing
    finally:
        for name in ("probe_a", "probe_b"):
            SUITES._entries.pop(name, None)
            SUITE_FACTS.pop(name, None)


@pytest.mark.slow
def test_digits_suite_runs_end_to_end(tmp_path: Path) -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(6, 1, 28, 28, generator=generator)
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 2))
    suite = get_suite("digits", spsa_steps=2, boundary_iterations=3, boundary_images=4)
    attacks = ["clean", "spatial_grid", "spsa_with_random_spatial",
               "boundary_with_random_spatial"]
    results = evaluate(model, suite, (images, labels), out_dir=tmp_path, attacks=attacks,
                       batch_size=3, progress=False)
    assert list(results) == attacks
    assert results["boundary_with_random_spatial"]["images"] == 4
    assert results["spatial_grid"]["model_evaluations"] == 6 * 275
    for record in results.values():
        assert 0.0 <= record["accuracy@80"] <= 1.0
        assert set(record["error_indices"]) <= set(range(6))
        wrong = round((1 - record["accuracy@100"]) * record["images"])
        assert len(record["error_indices"]) == wrong
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["shuffle"] is True
    assert [a["name"] for a in config["suite"]["attacks"]] == attacks


def test_an_optional_entry_must_be_one_of_the_suites() -> None:
    with pytest.raises(UsageError, match="suite 'mine' marks unknown attacks optional: extra"):
        Suite(name="mine", entries=(SuiteEntry("clean", Identity()),), optional=("extra",))
