"""``pretrained=True`` is decided above models and hub: models never load the hub, the
releases are declared beside their builders (models.zoo) and the hub reads them there."""

from __future__ import annotations

import ast
import inspect
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

import llrnet
import llrnet.pretrained
from llrnet.core.errors import UsageError
from llrnet.models import list_models
from llrnet.models.zoo import RELEASED, Released, released

PACKAGE = Path(llrnet.__file__).parent
REPOSITORY = PACKAGE.parents[1]


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_importing_models_and_building_loads_neither_hub_nor_pretrained_early() -> None:
    out = _run(
        "import sys\n"
        "hub = lambda: sorted(m for m in sys.modules if m.startswith('llrnet.hub'))\n"
        "import llrnet.models as models\n"
        "print(hub(), 'llrnet.pretrained' in sys.modules)\n"
        "from llrnet.models import create_model\n"
        "net = create_model('digits_wrn', depth=10, width=1)\n"
        "print(hub(), net.llrnet_architecture, net.llrnet_kwargs)\n"
        "import llrnet.pretrained\n"
        "print(create_model is llrnet.pretrained.create_model is models.create_model)\n"
        "try:\n"
        "    create_model('digits_wrn', pretrained=True)\n"
        "except Exception as error:\n"
        "    print(type(error).__name__, hub())\n")
    assert out.splitlines() == [
        "[] False",
        "[] digits_wrn {'depth': 10, 'width': 1}",
        "True",
        "UsageError []",  # an unknown release fails before the hub is imported
    ]


def test_models_name_neither_the_hub_nor_pretrained() -> None:
    """No import and no importlib string; the one exception is the declared lazy re-export
    of create_model in models/__init__.py."""
    for path in sorted((PACKAGE / "models").glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {node.module for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                     for alias in node.names}
        strings = {node.value for node in ast.walk(tree)
                   if isinstance(node, ast.Constant) and isinstance(node.value, str)
                   and node.value.startswith(("llrnet.hub", "llrnet.pretrained"))}
        assert not strings, f"{path.name}: {strings}"
        assert not {m for m in imported if m.startswith("llrnet.hub")}, path.name
        upward = {m for m in imported if m.startswith("llrnet.pretrained")}
        assert upward == ({"llrnet.pretrained"} if path.name == "__init__.py" else set())


def test_the_releases_are_declared_in_the_model_zoo() -> None:
    assert sorted(RELEASED) == ["llr_pretrain_adv", "resnet152_v2_imagenet",
                                "wrn_40_8_softplus"]
    assert set(RELEASED) <= set(list_models())
    assert RELEASED["llr_pretrain_adv"] == Released(
        "deepmind/llr-pretrain-adv/latents/1",
        "bird-or-bicycle: ResNet-152 v2, LLR pre-trained on ImageNet, adversarially trained",
        linear="deepmind/llr-pretrain-adv/linear/1")
    assert all(r.linear is None and r.architecture is None
               for name, r in RELEASED.items() if name != "llr_pretrain_adv")
    with pytest.raises(UsageError, match=r"no released weights for 'digits_wrn'; released: "
                                         r"llr_pretrain_adv, resnet152_v2_imagenet, "
                                         r"wrn_40_8_softplus"):
        released("digits_wrn")


def test_the_hub_reads_the_declarations(monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    from llrnet.hub.pretrained import cache_state

    monkeypatch.setenv("LLRNET_CACHE", str(tmp_path))
    monkeypatch.delenv("TFHUB_CACHE_DIR", raising=False)
    state = cache_state("llr_pretrain_adv")
    assert state["handles"] == ["deepmind/llr-pretrain-adv/latents/1",
                                "deepmind/llr-pretrain-adv/linear/1"]
    assert state["description"] == RELEASED["llr_pretrain_adv"].description
    assert state["modules_cached"] == [False, False] and not state["converted"]
    monkeypatch.setitem(RELEASED, "digits_wrn", Released("owner/digits/1", "a test release"))
    assert cache_state("digits_wrn")["handles"] == ["owner/digits/1"]


def test_pretrained_arguments_are_refused_before_anything_is_fetched() -> None:
    with pytest.raises(UsageError, match=r"llr_pretrain_adv: pretrained weights fix the "
                                         r"architecture; no arguments \(depth\)"):
        llrnet.pretrained.create_model("llr_pretrain_adv", pretrained=True, depth=50)


def test_hubconf_offers_exactly_the_releases_through_create_model() -> None:
    namespace = runpy.run_path(str(REPOSITORY / "hubconf.py"))
    entries = {name for name, value in namespace.items() if inspect.isfunction(value)
               and "pretrained" in inspect.signature(value).parameters
               and value is not namespace["create_model"]}
    assert entries == set(RELEASED)
    assert namespace["create_model"] is llrnet.pretrained.create_model
