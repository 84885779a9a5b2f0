"""The kept bad-input corpus: every case through the real ``llrnet`` entry point.

Each CLI case runs ``llrnet.cli.main`` in-process and checks four things: the
exit code; exactly one stderr line that is not a warning, matching the
expected message (and no line at all for the cases that must keep working);
no traceback anywhere; and no file at the final output path. Warnings are
allowed, one line each, and never the same one twice. The API cases check
that the Python functions raise llrnet's own errors with a useful message.

Everything is built once per module in a temporary folder (tiny models, 8x8
to 64x64 images, a two-step training run), so the file takes seconds.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import pickle
import re
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from hub_helpers import FIXTURES, archive_with, copy_module, module_archive, with_entry
from llrnet.cli import describe, main
from llrnet.core.contracts import check_images
from llrnet.core.errors import InputError, LlrnetError, UsageError
from llrnet.models import as_model_fn, create_model, save_weights
from llrnet.models.weights import tensors_sha256
from model_helpers import constant_bird_weights

pytestmark = pytest.mark.usefixtures("one_thread")


class Kit:
    """The corpus' inputs, built once: good and broken files of every kind."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.weights = self._oracle_weights(root / "good.safetensors")
        self.images = self._images(root / "images")
        self.bad_weights = self._bad_weights(root / "weights")
        self.archives = self._archives(root / "archives")
        self.runs = self._runs(root / "runs")
        self.bob = self._bird_or_bicycle(root / "bob")
        self.file = root / "a_file.txt"
        self.file.write_text("not a folder\n")
        self.folder = root / "a_folder"
        self.folder.mkdir()
        self.latin1 = root / "latin1.yaml"
        self.latin1.write_bytes("description: caf\xe9\nsteps: 3\n".encode("latin-1"))
        self.bad_yaml = root / "bad.yaml"
        self.bad_yaml.write_text("steps: [1, 2\n")
        self.list_yaml = root / "list.yaml"
        self.list_yaml.write_text("- 1\n- 2\n")
        self.latin1_weights = root / os.fsdecode(b"caf\xe9.safetensors")  # not UTF-8
        shutil.copyfile(self.weights, self.latin1_weights)

    def out(self, name: str) -> Path:
        """A fresh output path under the kit (never created by the kit)."""
        return self.root / "outputs" / name

    @staticmethod
    def _oracle_weights(path: Path) -> Path:
        return constant_bird_weights(path, 2.0)

    @staticmethod
    def _images(folder: Path) -> dict[str, Path]:
        folder.mkdir(parents=True)
        rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        paths = {name: folder / name for name in (
            "good.png", "good.jpg", "cmyk.jpg", "deep.png", "animated.gif", "float.tiff",
            "truncated.jpg", "empty.png", "text.jpg", "bomb.png", "int32.tiff")}
        Image.fromarray(rgb).save(paths["good.png"])
        Image.fromarray(rgb).save(paths["good.jpg"], quality=90)
        Image.fromarray(rgb).convert("CMYK").save(paths["cmyk.jpg"])
        Image.fromarray(np.full((40, 40), 40000, dtype=np.uint16)).save(paths["deep.png"])
        frames = [Image.fromarray(np.full((16, 16, 3), v, np.uint8)) for v in (10, 200)]
        frames[0].save(paths["animated.gif"], save_all=True, append_images=frames[1:])
        Image.fromarray(np.zeros((8, 8), np.float32), mode="F").save(paths["float.tiff"])
        Image.fromarray(np.zeros((8, 8), np.int32), mode="I").save(paths["int32.tiff"])
        data = paths["good.jpg"].read_bytes()
        paths["truncated.jpg"].write_bytes(data[: len(data) // 3])
        paths["empty.png"].write_bytes(b"")
        paths["text.jpg"].write_text("this is not a JPEG\n")
        paths["bomb.png"].write_bytes(_png_header(100_000, 100_000))
        return paths

    def _bad_weights(self, folder: Path) -> dict[str, Path]:
        folder.mkdir(parents=True)
        good = self.weights.read_bytes()
        paths: dict[str, Path] = {}

        def put(name: str, data: bytes) -> None:
            paths[name] = folder / f"{name}.safetensors"
            paths[name].write_bytes(data)

        put("truncated", good[: len(good) // 2])
        put("empty", b"")
        put("pickle", pickle.dumps({"weight": torch.zeros(2)}))
        put("text", b"hello\n")
        with safe_open(str(self.weights), framework="pt") as handle:
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
            metadata = dict(handle.metadata())
        record = json.loads(metadata["llrnet"])

        def edited(name: str, change: Callable[[dict[str, Any]], None],
                   tensor_change: Callable[[dict[str, torch.Tensor]], None] | None = None
                   ) -> None:
            new_record = json.loads(json.dumps(record))
            change(new_record)
            new_tensors = dict(tensors)
            if tensor_change is not None:
                tensor_change(new_tensors)
                new_record["sha256"] = tensors_sha256(new_tensors)  # an edit, hash updated
            paths[name] = folder / f"{name}.safetensors"
            save_file(new_tensors, str(paths[name]), {"llrnet": json.dumps(new_record)})

        edited("kwargs_list", lambda r: r.__setitem__("kwargs", ["units", 1]))
        edited("kwargs_string", lambda r: r.__setitem__("kwargs", "units"))
        edited("kwargs_type", lambda r: r["kwargs"].__setitem__("stem_width", "eight"))
        edited("kwargs_negative", lambda r: r["kwargs"].__setitem__("stem_width", -8))
        edited("kwargs_unknown", lambda r: r["kwargs"].__setitem__("colour", "blue"))
        edited("unknown_arch", lambda r: r.__setitem__("architecture", "resnet_9000"))
        edited("no_arch", lambda r: r.pop("architecture"))
        edited("hash", lambda r: r.__setitem__("sha256", "0" * 64))
        name = next(k for k, v in tensors.items() if v.dim() == 4)

        def reshaped(t: dict[str, torch.Tensor]) -> None:
            t[name] = torch.zeros(1, 1, 1, 1)

        def retyped(t: dict[str, torch.Tensor]) -> None:
            t[name] = t[name].to(torch.int32)

        edited("shape", lambda r: None, reshaped)
        edited("dtype", lambda r: None, retyped)
        paths["no_metadata"] = folder / "no_metadata.safetensors"
        save_file(tensors, str(paths["no_metadata"]))
        paths["bad_json"] = folder / "bad_json.safetensors"
        save_file(tensors, str(paths["bad_json"]), {"llrnet": "{not json"})
        return paths

    @staticmethod
    def _archives(folder: Path) -> dict[str, Path]:
        folder.mkdir(parents=True)
        paths: dict[str, Path] = {}
        paths["good"] = module_archive(folder / "linear.tar.gz")

        def hostile(name: str, member: tarfile.TarInfo, data: bytes = b"") -> None:
            paths[name] = archive_with(folder / f"{name}.tar.gz", member, data)

        hostile("dotdot", tarfile.TarInfo("../evil.txt"), b"x")
        hostile("absolute", tarfile.TarInfo("/tmp/llrnet-evil.txt"), b"x")
        link = tarfile.TarInfo("variables/link")
        link.type, link.linkname = tarfile.SYMTYPE, "../../outside"
        hostile("symlink", link)
        hard = tarfile.TarInfo("variables/hard")
        hard.type, hard.linkname = tarfile.LNKTYPE, "../outside"
        hostile("hardlink", hard)
        device = tarfile.TarInfo("dev/null")
        device.type = tarfile.CHRTYPE
        hostile("device", device)
        data = paths["good"].read_bytes()
        paths["truncated"] = folder / "truncated.tar.gz"
        paths["truncated"].write_bytes(data[: len(data) // 2])
        paths["not_gzip"] = folder / "not_gzip.tar.gz"
        paths["not_gzip"].write_text("<html>not an archive</html>\n")
        # Module folders: a bad CRC in the variables, a garbage saved_model.pb.
        crc = folder / "bad_crc"
        shutil.copytree(FIXTURES / "linear", crc)
        shard = next(crc.glob("variables/variables.data-*"))
        raw = bytearray(shard.read_bytes())
        raw[0] ^= 0xFF
        shard.write_bytes(bytes(raw))
        paths["bad_crc"] = crc
        garbage = folder / "garbage_pb"
        shutil.copytree(FIXTURES / "linear", garbage)
        (garbage / "saved_model.pb").write_bytes(b"\xff\xfe garbage \x00" * 10)
        paths["garbage_pb"] = garbage
        empty = folder / "empty_module"
        empty.mkdir()
        paths["empty_module"] = empty
        # Bombs: a member announced as 3 GiB (alone, or after a valid module), and
        # more members than the cap; refused from their headers, nothing written.
        paths["bomb"] = _bomb(folder / "bomb.tar.gz")
        paths["bomb_beside"] = _bomb(folder / "bomb_beside.tar.gz", FIXTURES / "linear")
        paths["many_members"] = folder / "many_members.tar.gz"
        with tarfile.open(paths["many_members"], "w:gz") as archive:
            for i in range(10_001):
                archive.addfile(tarfile.TarInfo(f"m/{i:05d}"), io.BytesIO(b""))
        stem = "wide_resnet/conv2d/w"  # float32[3, 3, 3, 16] in the cifar10 fixture
        for name, change in (("negative_dim", {"shape": (3, -3, 3, 16)}),
                             ("huge_empty", {"shape": (2**32, 2**32), "size": 0}),
                             ("string_weight", {"dtype": 7})):
            paths[name] = with_entry(copy_module("cifar10", folder / name), stem, **change)
        return paths

    @staticmethod
    def _bird_or_bicycle(root: Path) -> Path:
        """A bird-or-bicycle test split of 8 images, 2 of them unreadable."""
        for label, name in enumerate(("bicycle", "bird")):
            folder = root / "0.0.4" / "test" / name
            folder.mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (40, 40), (200 * (1 - label), 30, 200 * label)).save(
                    folder / f"{name[:2]}{i:014x}.jpg")
        (root / "0.0.4/test/bicycle/bi00000000000001.jpg").write_bytes(b"")
        (root / "0.0.4/test/bird/bi00000000000002.jpg").write_text("not a jpeg")
        return root

    @staticmethod
    def _runs(folder: Path) -> dict[str, Path]:
        from llrnet.train import load_config, train
        from llrnet.train.checkpoint import save_checkpoint

        base = folder / "base"
        config = load_config("digits_standard", ["steps=4", "checkpoint_every=1",
                                                 "data.eval_images=4", "tensorboard=false",
                                                 "eval.every=0"])
        train(config, base, until_step=2, progress=False)
        runs = {"base": base}
        checkpoints = sorted((base / "checkpoints").glob("*.pt"))
        assert len(checkpoints) == 2

        def variant(name: str, damage: Callable[[Path], None],
                    which: list[Path]) -> None:
            target = folder / name
            shutil.copytree(base, target)
            for path in which:
                damage(target / "checkpoints" / path.name)
            runs[name] = target

        def flip(path: Path) -> None:
            raw = bytearray(path.read_bytes())
            raw[len(raw) // 2] ^= 0xFF
            path.write_bytes(bytes(raw))

        def plant(path: Path) -> None:  # a pickle that runs code, with a forged manifest
            payload = pickle.dumps(_Planted())
            path.write_bytes(payload)
            manifest = path.with_suffix(".json")
            record = json.loads(manifest.read_text())
            record["sha256"] = __import__("hashlib").sha256(payload).hexdigest()
            record["bytes"] = len(payload)
            manifest.write_text(json.dumps(record))

        def truncate(path: Path) -> None:
            path.write_bytes(path.read_bytes()[:100])

        def reshape(path: Path) -> None:  # a checkpoint of another model, manifest intact
            state = torch.load(path, weights_only=True)
            name = next(k for k, v in state["model"].items() if k.endswith("conv.weight"))
            state["model"][name] = torch.zeros(1, 1, 1, 1)
            state["model"]["extra.weight"] = torch.zeros(1)
            path.unlink()
            path.with_suffix(".json").unlink()
            save_checkpoint(path.parent, int(state["step"]), state)

        variant("all_flipped", flip, checkpoints)
        variant("all_planted", plant, checkpoints)
        variant("newest_truncated", truncate, checkpoints[-1:])
        variant("other_shape", reshape, checkpoints[-1:])
        return runs


class _Planted:
    """Unpickling this would call ``exec``; ``weights_only=True`` refuses it."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (exec, ("raise SystemExit('planted pickle ran')",))


def _png_header(width: int, height: int) -> bytes:
    """A valid PNG claiming ``width`` x ``height`` pixels, with a few bytes of data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    torch.set_num_threads(1)
    return Kit(tmp_path_factory.mktemp("corpus"))


def _bomb(path: Path, beside: Path | None = None) -> Path:
    """A ``.tar.gz`` whose last member's header announces 3 GiB (4 KiB follow it)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for file in sorted(beside.rglob("*")) if beside is not None else []:
            archive.add(file, arcname=file.relative_to(beside).as_posix(), recursive=False)
        end = archive.offset
    body = buffer.getvalue()[:end]  # without the end-of-archive blocks
    bomb = tarfile.TarInfo("variables/bomb.bin")
    bomb.size = 3 << 30
    path.write_bytes(gzip.compress(body + bomb.tobuf(tarfile.GNU_FORMAT) + bytes(4096)))
    return path


@dataclass(frozen=True)
class Case:
    """One corpus entry: argv from the kit, the exit code, the stderr line's regex
    (None: the command must succeed with no error line), paths that must not exist."""

    id: str
    argv: Callable[[Kit], list[str]]
    code: int
    message: str | None
    absent: Callable[[Kit], list[Path]] = field(default=lambda kit: [])


def _predict(image: str, *extra: str) -> Callable[[Kit], list[str]]:
    return lambda k: ["predict", str(k.images[image]), "--weights", str(k.weights), *extra]


def _weights(name: str, command: str = "predict") -> Callable[[Kit], list[str]]:
    if command == "info":
        return lambda k: ["info", str(k.bad_weights[name])]
    return lambda k: ["predict", str(k.images["good.png"]), "--weights",
                      str(k.bad_weights[name])]


def _eval(*extra: str, out: str = "eval") -> Callable[[Kit], list[str]]:
    return lambda k: ["eval", "--suite", "digits", "--model", "digits_wrn", "--attacks",
                      "clean", "--max-images", "4", "--no-progress", "--out",
                      str(k.out(out)), *extra]


def _train(*extra: str, out: str = "train") -> Callable[[Kit], list[str]]:
    return lambda k: ["train", "--no-progress", "--out", str(k.out(out)), *extra]


def _import(source: Callable[[Kit], Path], *extra: str) -> Callable[[Kit], list[str]]:
    return lambda k: ["import-hub", str(source(k)), "--arch", "llr_pretrain_adv_tiny",
                      "--out", str(k.out("imported.safetensors")), *extra]


def _imported(k: Kit) -> list[Path]:
    return [k.out("imported.safetensors")]


def _eval_results(k: Kit) -> list[Path]:
    return [k.out("eval") / "results.json"]


def _train_final(k: Kit) -> list[Path]:
    return [k.out("train") / "final.safetensors"]


DECODE = r"cannot decode image"
CASES = [
    # --- images through predict: one line per unreadable file, the others scored ---
    Case("png", _predict("good.png"), 0, None),
    Case("jpeg", _predict("good.jpg"), 0, None),
    Case("cmyk jpeg", _predict("cmyk.jpg"), 0, None),
    Case("16-bit png", _predict("deep.png"), 0, None),
    Case("animated gif", _predict("animated.gif"), 0, None),
    Case("truncated jpeg", _predict("truncated.jpg"), 1, DECODE),
    Case("empty file", _predict("empty.png"), 1, DECODE),
    Case("text as jpeg", _predict("text.jpg"), 1, DECODE),
    Case("decompression bomb", _predict("bomb.png"), 1, r"bomb\.png: refused as a "
         r"decompression bomb"),
    Case("float image", _predict("float.tiff"), 1, r"floating-point images .* no defined range"),
    Case("32-bit image", _predict("int32.tiff"), 1, r"32-bit integer images"),
    Case("directory as image", lambda k: ["predict", str(k.folder), "--weights",
                                          str(k.weights)], 1, r"is a directory, not an image"),
    Case("missing image", lambda k: ["predict", str(k.root / "nope.png"), "--weights",
                                     str(k.weights)], 1, r"nope\.png: no such file"),
    Case("bad then good", lambda k: ["predict", str(k.images["bomb.png"]),
                                     str(k.images["good.png"]), "--weights", str(k.weights)],
         1, r"bomb\.png: refused as a decompression bomb"),
    Case("predict batch size 0", _predict("good.png", "--batch-size", "0"), 2,
         r"batch size must be >= 1"),
    Case("predict device nonsense", _predict("good.png", "--device", "nonsense"), 2,
         r"'nonsense' is not a device"),
    Case("predict device cuda", _predict("good.png", "--device", "cuda:7"), 2,
         r"CUDA|cuda:7"),
    # --- weights files ---
    Case("weights truncated", _weights("truncated"), 2, r"not a valid safetensors file"),
    Case("weights empty", _weights("empty"), 2, r"not a valid safetensors file"),
    Case("weights pickle", _weights("pickle"), 2, r"not a valid safetensors file"),
    Case("weights text", _weights("text"), 2, r"not a valid safetensors file"),
    Case("weights missing", lambda k: ["predict", str(k.images["good.png"]), "--weights",
                                       str(k.root / "none.safetensors")], 2, r"not found"),
    Case("weights kwargs list", _weights("kwargs_list"), 2, r"must be a mapping"),
    Case("weights kwargs string", _weights("kwargs_string"), 2, r"must be a mapping"),
    Case("weights kwargs type", _weights("kwargs_type"), 2, r"stem_width"),
    Case("weights kwargs negative", _weights("kwargs_negative"), 2, r"stem_width"),
    Case("weights kwargs unknown", _weights("kwargs_unknown"), 2, r"colour"),
    Case("weights unknown arch", _weights("unknown_arch"), 2, r"resnet_9000"),
    Case("weights no arch", _weights("no_arch"), 2, r"lacks 'architecture'"),
    Case("weights forged hash", _weights("hash"), 2, r"sha256|hash"),
    Case("weights wrong shape", _weights("shape"), 2, r"wrong shape"),
    Case("weights int32 kernel", _weights("dtype"), 2, r"wrong dtype: .* torch\.int32"),
    Case("weights no metadata", _weights("no_metadata"), 2, r"no llrnet metadata record"),
    Case("weights bad json", _weights("bad_json"), 2, r"not valid JSON"),
    Case("weights with a non-UTF-8 name", lambda k: ["predict", str(k.images["good.png"]),
                                                     "--weights", str(k.latin1_weights)], 0,
         None),
    Case("info pickle", _weights("pickle", "info"), 2, r"not a valid safetensors file"),
    Case("info no metadata", _weights("no_metadata", "info"), 2, r"no llrnet metadata"),
    Case("weights hf-hub malformed", lambda k: ["predict", str(k.images["good.png"]),
                                                "--weights", "hf-hub:no-owner"], 2,
         r"not a Hugging Face Hub name"),
    Case("export-hf forged hash", lambda k: ["export-hf", str(k.bad_weights["hash"]),
                                             str(k.out("hf_export"))], 2, r"sha256",
         lambda k: [k.out("hf_export")]),
    Case("export-hf results not json", lambda k: ["export-hf", str(k.weights),
                                                  str(k.out("hf_export")), "--results",
                                                  str(k.file)], 2, r"not valid JSON",
         lambda k: [k.out("hf_export")]),
    # --- eval options ---
    Case("eval works", _eval(), 0, None),
    Case("eval unknown suite", lambda k: ["eval", "--suite", "nope", "--model", "digits_wrn",
                                          "--out", str(k.out("eval"))], 2, r"unknown suite"),
    Case("eval unknown attack", _eval("--attacks", "clean,bogus"), 2, r"bogus"),
    Case("eval empty attacks", _eval("--attacks", ","), 2, r"--attacks is empty"),
    Case("eval unknown model", lambda k: ["eval", "--suite", "digits", "--model", "nope",
                                          "--out", str(k.out("eval"))], 2, r"unknown model"),
    Case("eval max images 0", _eval("--max-images", "0"), 2, r"--max-images must be >= 1",
         _eval_results),
    Case("eval suite option unknown", _eval("--suite-option", "bogus=1"), 2,
         r"suite 'digits' takes no argument\(s\) bogus; valid: ", _eval_results),
    Case("eval spsa_samples 1e9", _eval("--suite-option", "spsa_samples=1000000000"), 2,
         r"samples must be <= 65536, got 1000000000", _eval_results),
    Case("eval suite option with a dot", _eval("--suite-option", "a.b=1"), 2,
         r"--suite-option 'a\.b=1': suite options have no dots", _eval_results),
    Case("eval suite option without =", _eval("--suite-option", "noequals"), 2,
         r"'noequals' must look like key=value", _eval_results),
    Case("eval seed 2**70", _eval("--seed", str(2**70)), 2,
         r"argument --seed: must be in \[0, 2\*\*63 - 1\]", _eval_results),
    Case("eval seed negative", _eval("--seed", "-1"), 2, r"argument --seed: must be in",
         _eval_results),
    Case("eval seed text", _eval("--seed", "abc"), 2, r"argument --seed: not an integer",
         _eval_results),
    Case("eval batch size 0", _eval("--batch-size", "0"), 2, r"batch_size must be",
         _eval_results),
    Case("eval device nonsense", _eval("--device", "nonsense"), 2, r"not a device",
         _eval_results),
    Case("eval device cuda", _eval("--device", "cuda:7"), 2, r"CUDA|cuda:7", _eval_results),
    Case("eval out is a file", lambda k: [*_eval()(k)[:-1], str(k.file)], 2,
         r"exists and is not a folder"),
    Case("eval out below a file", lambda k: [*_eval()(k)[:-1], str(k.file / "sub")], 2,
         r"is a file, so nothing can be written"),
    Case("eval data for digits", _eval("--data", "/tmp"), 2, r"digits suite uses the bundled",
         _eval_results),
    Case("eval bird data missing", lambda k: ["eval", "--suite", "bird_or_bicycle", "--model",
                                              "llr_pretrain_adv_tiny", "--data",
                                              str(k.root / "nothing"), "--out",
                                              str(k.out("bob"))], 2, r"not found"),
    Case("eval unreadable images", lambda k: ["eval", "--suite", "bird_or_bicycle", "--model",
                                              "llr_pretrain_adv_tiny", "--data", str(k.bob),
                                              "--attacks", "clean", "--no-progress", "--out",
                                              str(k.out("bob_eval"))], 2,
         r"2 of 8 images cannot be read \(.*bi00000000000001\.jpg.*bi00000000000002\.jpg.*"
         r"--skip-unreadable", lambda k: [k.out("bob_eval") / "results.json"]),
    Case("eval weights missing", lambda k: ["eval", "--suite", "digits", "--weights",
                                            str(k.root / "none.safetensors"), "--out",
                                            str(k.out("eval"))], 2, r"not found"),
    Case("eval bad weights", lambda k: ["eval", "--suite", "digits", "--weights",
                                        str(k.bad_weights["pickle"]), "--out",
                                        str(k.out("eval"))], 2, r"not a valid safetensors"),
    Case("eval missing option", lambda k: ["eval", "--suite", "digits"], 2,
         r"the following arguments are required"),
    # --- train options, presets, configs ---
    Case("train unknown preset", _train("--preset", "nope"), 2, r"unknown preset 'nope'"),
    Case("train unknown key", _train("--preset", "digits_standard", "--set", "bogus=1"), 2,
         r"bogus"),
    Case("train bad value", _train("--preset", "digits_standard", "--set", "steps=abc"), 2,
         r"steps: expected an integer"),
    Case("train steps 0", _train("--preset", "digits_standard", "--set", "steps=0"), 2,
         r"steps must be >= 1"),
    Case("train photometric share 1.5", _train("--preset", "digits_standard", "--set",
                                               "data.photometric=1.5"), 2,
         r"data\.photometric must be in \[0, 1\], got 1\.5"),
    Case("train set without =", _train("--preset", "digits_standard", "--set", "steps"), 2,
         r"KEY=VALUE|key=value|="),
    Case("train seed 2**70", _train("--preset", "digits_standard", "--set",
                                    f"seed={2**70}"), 2, r"seed must be in \[0, 2\*\*63 - 1\]"),
    Case("train device nonsense", _train("--preset", "digits_standard", "--set",
                                         "device=nonsense"), 2, r"not a device"),
    Case("train device cuda", _train("--preset", "digits_standard", "--set", "device=cuda:7"),
         2, r"CUDA|cuda:7", _train_final),
    Case("train threads 0", _train("--preset", "digits_standard", "--threads", "0"), 2,
         r"argument --threads: must be >= 1"),
    Case("train config not utf-8", lambda k: _train("--config", str(k.latin1))(k), 2,
         r"latin1\.yaml is not UTF-8 text"),
    Case("train config missing", lambda k: _train("--config", str(k.root / "no.yaml"))(k), 2,
         r"config file not found"),
    Case("train config folder", lambda k: _train("--config", str(k.folder) + "/")(k), 2,
         r"is a folder, not a YAML file|not found"),
    Case("train config bad yaml", lambda k: _train("--config", str(k.bad_yaml))(k), 2,
         r"is not valid YAML"),
    Case("train config a list", lambda k: _train("--config", str(k.list_yaml))(k), 2,
         r"must hold a mapping"),
    Case("train no preset", _train(), 2, r"give --preset NAME"),
    Case("train labels beyond the model's classes",
         _train("--preset", "digits_standard", "--set", "data.name=digits10"), 2,
         r"the data has labels up to 9 but the model has 2 classes", _train_final),
    Case("train a model that cannot take the images",
         _train("--preset", "digits_standard", "--set", "model.name=llr_pretrain_adv_tiny",
                "--set", "model.kwargs={}"), 2,
         r"the model cannot take the data's images \(shape \[1, 1, 28, 28\]\)", _train_final),
    Case("train out is a file", lambda k: ["train", "--preset", "digits_standard", "--out",
                                           str(k.file)], 2, r"exists and is not a folder"),
    Case("train into a started run", lambda k: ["train", "--preset", "digits_standard",
                                                "--out", str(k.runs["base"])], 2,
         r"already holds a training run; pass --resume"),
    Case("train different config on resume",
         lambda k: ["train", "--preset", "digits_standard", "--set", "optim.lr=0.5", "--out",
                    str(k.runs["base"]), "--resume"], 2, r"cannot resume with a different"),
    Case("resume all checkpoints corrupt",
         lambda k: ["train", "--out", str(k.runs["all_flipped"]), "--resume", "--no-progress"],
         1, r"no usable checkpoint .* --restart",
         lambda k: [k.runs["all_flipped"] / "final.safetensors"]),
    Case("resume all checkpoints planted pickles",
         lambda k: ["train", "--out", str(k.runs["all_planted"]), "--resume", "--no-progress"],
         1, r"no usable checkpoint",
         lambda k: [k.runs["all_planted"] / "final.safetensors"]),
    Case("resume newest truncated falls back",
         lambda k: ["train", "--out", str(k.runs["newest_truncated"]), "--resume",
                    "--no-progress"], 0, None),
    Case("train until-step -1", _train("--preset", "digits_standard", "--until-step", "-1"),
         2, r"argument --until-step: must be >= 1", lambda k: [k.out("train")]),
    Case("resume a checkpoint of another shape",
         lambda k: ["train", "--out", str(k.runs["other_shape"]), "--resume", "--no-progress"],
         1, r"checkpoint does not fit this run: model: unexpected tensor\(s\) 'extra\.weight'; "
         r"model: '.*' has shape \[1, 1, 1, 1\] in the checkpoint, \[.*\] in this run",
         lambda k: [k.runs["other_shape"] / "final.safetensors"]),
    Case("train out not UTF-8", _train("--preset", "digits_standard", "--set", "steps=1",
                                       "--set", "data.eval_images=4", "--set", "eval.every=0",
                                       "--set", "tensorboard=false",
                                       out=os.fsdecode(b"run-\xe9")), 0, None),
    Case("train out not UTF-8 with TensorBoard",
         _train("--preset", "digits_standard", "--set", "steps=1", out=os.fsdecode(b"tb-\xe9")),
         2, r"TensorBoard cannot write below a name that is not UTF-8; rename the folder or "
         r"--set tensorboard=false", lambda k: [k.out(os.fsdecode(b"tb-\xe9"))]),
    Case("resume a folder without a run", lambda k: ["train", "--out", str(k.folder),
                                                     "--resume"], 2, r"not found|no run"),
    Case("demo out is a file", lambda k: ["demo", "--quick", "--out", str(k.file)], 2,
         r"exists and is not a folder"),
    # --- hub modules and archives ---
    Case("import out is a folder", lambda k: ["import-hub", str(FIXTURES / "latents"),
                                              "--arch", "llr_pretrain_adv_tiny", "--out",
                                              str(k.folder)], 2, r"is a folder; give a file"),
    Case("import out of 255 bytes", lambda k: ["import-hub", str(FIXTURES / "cifar10"),
                                               "--arch", "wrn_10_1_softplus", "--out",
                                               str(k.out("w" * 243 + ".safetensors"))], 0,
         None),
    Case("import unknown arch", lambda k: ["import-hub", str(FIXTURES / "latents"), "--arch",
                                           "nope", "--out",
                                           str(k.out("imported.safetensors"))], 2, r"nope",
         _imported),
    Case("import missing module", _import(lambda k: k.root / "nowhere"), 2,
         r"nowhere", _imported),
    Case("import empty folder", _import(lambda k: k.archives["empty_module"]), 2,
         r"saved_model\.pb|not a TF-Hub module|no module", _imported),
    Case("import archive with ..", _import(lambda k: k.archives["dotdot"]), 2,
         r"path escapes the target folder", _imported),
    Case("import archive absolute path", _import(lambda k: k.archives["absolute"]), 2,
         r"path escapes the target folder", _imported),
    Case("import archive symlink", _import(lambda k: k.archives["symlink"]), 2,
         r"points outside the target folder", _imported),
    Case("import archive hardlink", _import(lambda k: k.archives["hardlink"]), 2,
         r"points outside the target folder", _imported),
    Case("import archive device", _import(lambda k: k.archives["device"]), 2,
         r"device|special|not a regular file", _imported),
    Case("import truncated archive", _import(lambda k: k.archives["truncated"]), 2,
         r"truncated|corrupt|cannot be read|not a", _imported),
    Case("import html as archive", _import(lambda k: k.archives["not_gzip"]), 2,
         r"not a|gzip|tar", _imported),
    Case("import bad crc", _import(lambda k: k.archives["bad_crc"]), 2, r"CRC|crc",
         _imported),
    Case("import garbage saved_model.pb", _import(lambda k: k.archives["garbage_pb"]), 2,
         r"saved_model\.pb", _imported),
    Case("import sha256 mismatch", _import(lambda k: k.archives["good"], "--sha256",
                                           "ab" * 32), 2, r"does not match", _imported),
    Case("import a negative dimension",
         lambda k: ["import-hub", str(k.archives["negative_dim"]), "--arch", "wrn_10_1_softplus",
                    "--out", str(k.out("imported.safetensors"))], 2,
         r"tensor 'wide_resnet/conv2d/w' has the impossible shape float32\[3, -3, 3, 16\]",
         _imported),
    Case("import a string weight",
         lambda k: ["import-hub", str(k.archives["string_weight"]), "--arch",
                    "wrn_10_1_softplus", "--out", str(k.out("imported.safetensors"))], 2,
         r"'wide_resnet/conv2d/w' is a string tensor \[3, 3, 3, 16\]", _imported),
    Case("inspect a 2**32 x 2**32 tensor of 0 bytes",
         lambda k: ["inspect-hub", str(k.archives["huge_empty"])], 2,
         r"'wide_resnet/conv2d/w' has the impossible shape float32\[4294967296, 4294967296\]"),
    Case("inspect garbage saved_model.pb", lambda k: ["inspect-hub",
                                                      str(k.archives["garbage_pb"])], 2,
         r"saved_model\.pb"),
    Case("inspect hardlink archive", lambda k: ["inspect-hub", str(k.archives["hardlink"])],
         2, r"points outside the target folder"),
    Case("inspect missing", lambda k: ["inspect-hub", str(k.root / "nowhere")], 2,
         r"nowhere"),
    Case("import handle offline, not cached",
         lambda k: ["import-hub", "deepmind/llr-pretrain-adv/latents/1", "--offline", "--out",
                    str(k.out("imported.safetensors"))], 2,
         r"latents/1 is not in the cache .* downloads are off", _imported),
    Case("import url offline, not cached",
         lambda k: ["import-hub", "https://example.com/module", "--offline", "--out",
                    str(k.out("imported.safetensors"))], 2, r"is not in the cache", _imported),
    Case("pretrained unknown name", lambda k: ["pretrained", "nope"], 2,
         r"no released weights for 'nope'"),
    # --- data download and verify ---
    Case("download root is a file", lambda k: ["data", "download", "--root", str(k.file),
                                               "--no-progress"], 2,
         r"exists and is not a folder"),
    Case("download mirror not a url", lambda k: ["data", "download", "--root",
                                                 str(k.out("bob")), "--mirror", "notaurl",
                                                 "--no-progress"], 2,
         r"not an http\(s\) URL: 'notaurl'", lambda k: [k.out("bob")]),
    Case("download unknown split", lambda k: ["data", "download", "--root", str(k.out("bob")),
                                              "--splits", "nope", "--no-progress"], 2,
         r"nope", lambda k: [k.out("bob")]),
    Case("download workers 0", lambda k: ["data", "download", "--root", str(k.out("bob")),
                                          "--workers", "0", "--no-progress"], 2,
         r"workers must be >= 1", lambda k: [k.out("bob")]),
    Case("download retries -1", lambda k: ["data", "download", "--root", str(k.out("bob")),
                                           "--retries", "-1", "--no-progress"], 2,
         r"--retries must be >= 0", lambda k: [k.out("bob")]),
    Case("verify missing root", lambda k: ["data", "verify", "--root", str(k.root / "none")],
         2, r"llrnet data verify: error: no dataset at .*llrnet data download"),
    # --- the command itself ---
    Case("unknown command", lambda k: ["frobnicate"], 2, r"invalid choice"),
    Case("unknown option", lambda k: ["models", "--frob"], 2, r"unrecognized arguments"),
    # --- bounded downloads and extraction, credentials (issue 30) ---
    Case("import archive bomb", _import(lambda k: k.archives["bomb"]), 2,
         r"bomb\.tar\.gz: uncompressed size passes 3 GiB at 'variables/bomb\.bin', over 100 "
         r"times the archive's .* \(the ratio cap, \$LLRNET_HUB_MAX_RATIO\)", _imported),
    Case("import bomb beside a module", _import(lambda k: k.archives["bomb_beside"]), 2,
         r"bomb_beside\.tar\.gz: .* over 100 times the archive's", _imported),
    Case("inspect archive with too many members",
         lambda k: ["inspect-hub", str(k.archives["many_members"])], 2,
         r"more than 10000 members, over the member cap \(\$LLRNET_HUB_MAX_MEMBERS\)"),
    Case("import max download not a size",
         _import(lambda k: k.archives["good"], "--max-download", "lots"), 2,
         r"--max-download: 'lots' is not a size", _imported),
    Case("inspect max download 0",
         lambda k: ["inspect-hub", "https://example.com/m.tar.gz", "--max-download", "0"], 2,
         r"--max-download must be > 0 bytes"),
    Case("pretrained max download 0",
         lambda k: ["pretrained", "llr_pretrain_adv", "--max-download", "0"], 2,
         r"--max-download must be > 0 bytes"),
    Case("download max image size not a size",
         lambda k: ["data", "download", "--root", str(k.out("bob")), "--max-image-size",
                    "1Q"], 2, r"--max-image-size: '1Q' is not a size",
         lambda k: [k.out("bob")]),
    Case("import url with a password, offline",
         lambda k: ["import-hub", "https://user:hunter2@example.com/m.tar.gz?token=t0k",
                    "--offline", "--out", str(k.out("imported.safetensors"))], 2,
         r"error: https://example\.com/m\.tar\.gz is not in the cache \([^)]*\) and "
         r"downloads are off", _imported),
]

# --- state that cannot mix runs, untrusted weights records, locks, special files (issue 30) ---

_HELD: list[int] = []
"""Lock files held by this process for the lock cases (each released by the next one, the
last with the process; a later case's fresh output folder holds another file)."""


def _hold(path: Path) -> None:
    """Hold an exclusive flock on ``path`` (a separate open file, so a lock taken by
    ``main`` in this process conflicts with it as another process's would)."""
    import fcntl
    import os

    while _HELD:  # an earlier case's lock: released (its folder is gone or reused)
        os.close(_HELD.pop())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"pid {os.getpid()} on testhost since 2026-12-07T17:00:00Z\n".encode())
    _HELD.append(fd)


def _fifo_image(k: Kit) -> list[str]:
    import os

    path = k.out("pipe.jpg")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_fifo():  # the argv is also built without running it
        os.mkfifo(path)
    return ["predict", str(path), "--weights", str(k.weights)]


def _eval_state(k: Kit, manifest: str | None) -> list[str]:
    """``_eval()``'s argv, its output folder holding a chunk and ``manifest`` (None: none)."""
    state = k.out("eval") / "state"
    (state / "clean").mkdir(parents=True, exist_ok=True)
    (state / "clean" / "chunk_00000.safetensors").write_bytes(b"a chunk of some run")
    if manifest is not None:
        (state / "manifest.json").write_text(manifest)
    return _eval()(k)


def _edited_run(k: Kit) -> list[str]:
    """A copy of the kit's started run whose config.yaml has another learning rate."""
    run = k.out("edited_run")
    shutil.copytree(k.runs["base"], run, dirs_exist_ok=True)
    config = run / "config.yaml"
    config.write_text(re.sub(r"(?m)^  lr: .*$", "  lr: 0.123", config.read_text()))
    return ["train", "--out", str(run), "--resume", "--no-progress"]


def _edited_weights(k: Kit, change: Callable[[dict[str, Any]], None]) -> list[str]:
    """predict with a copy of the kit's weights whose record ``change`` edited."""
    with safe_open(str(k.weights), framework="pt") as handle:
        record = json.loads(handle.metadata()["llrnet"])
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    change(record)
    path = k.out("edited.safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"llrnet": json.dumps(record)})
    return ["predict", str(k.images["good.png"]), "--weights", str(path)]


def _rehashed(**kwargs: Any) -> Callable[[dict[str, Any]], None]:
    from llrnet.models.weights import architecture_sha256

    def change(record: dict[str, Any]) -> None:
        record["kwargs"] = {**record["kwargs"], **kwargs}
        record["arch_sha256"] = architecture_sha256(record["architecture"], record["kwargs"])
    return change


CASES += [
    Case("predict fifo", _fifo_image, 1, r"pipe\.jpg: is a FIFO, not a regular file; refused"),
    Case("eval chunks without manifest", lambda k: _eval_state(k, None), 2,
         r"holds evaluation results but no manifest\.json .*--restart .*new --out",
         _eval_results),
    Case("eval damaged manifest", lambda k: _eval_state(k, "{oops"), 2,
         r"manifest\.json is damaged .*--restart", _eval_results),
    Case("eval folder locked", lambda k: (_hold(k.out("eval") / "state" / "clean.lock"),
                                          _eval()(k))[1], 1,
         r"attack clean in .* is in use by pid \d+ on testhost since", _eval_results),
    Case("train folder locked", lambda k: (_hold(k.out("train") / ".llrnet.lock"),
                                           _train("--preset", "digits_standard")(k))[1], 1,
         r"run folder .* is in use by pid \d+ on testhost since 2026-12-07T17:00:00Z",
         lambda k: [k.out("train") / "config.yaml"]),
    Case("train resume edited config", _edited_run, 2,
         r"different configuration \(optim\.lr: .* -> 0\.123\) than the one .*step-\d+\.pt"),
    Case("weights edited bn_eps", lambda k: _edited_weights(  # same shapes, other numbers
        k, lambda r: r["kwargs"].update(bn_eps=0.001)), 2,
         r"architecture record .* does not match its arch_sha256"),
    Case("weights future format", lambda k: _edited_weights(
        k, lambda r: r.update(format_version=99)), 2, r"weights format 99, newer than"),
    Case("weights huge depth", lambda k: _edited_weights(k, _rehashed(units=[10**6, 1, 1, 1])),
         2,
         r"more tensors than the file's \d+"),
    Case("weights huge width", lambda k: _edited_weights(k, _rehashed(stem_width=1000000)), 2,
         r"wrong shape: .*1000000"),
]


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as stop:  # argparse's own exits
        return int(stop.code or 0)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gives_one_line_and_the_right_exit_code(
        case: Case, kit: Kit, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLRNET_HUB_CACHE", str(kit.root / "hub_cache"))
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(kit.root / "tfhub_cache"))
    monkeypatch.delenv("LLRNET_DEBUG", raising=False)
    shutil.rmtree(kit.root / "outputs", ignore_errors=True)
    code = _run(case.argv(kit))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert "weights_only" not in out + err  # never advise unpickling a refused file
    warning_lines = [line for line in err.splitlines() if ": warning: " in line]
    assert len(warning_lines) == len(set(warning_lines)), f"a warning shown twice: {err}"
    errors = [line for line in err.splitlines() if line.strip() and line not in warning_lines]
    if case.message is None:
        assert (code, errors) == (0, []), err
    else:
        assert code == case.code, err
        assert len(errors) == 1, err
        assert re.search(case.message, errors[0]), errors[0]
        assert errors[0].startswith("llrnet"), errors[0]
    for path in case.absent(kit):
        assert not path.exists(), f"{path} was left behind"


@pytest.mark.parametrize("variable", ["LLRNET_HUB_CACHE", "TFHUB_CACHE_DIR"])
def test_a_cache_variable_naming_a_file_gives_one_line(
        variable: str, kit: Kit, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLRNET_HUB_CACHE", str(kit.root / "hub_cache"))
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(kit.root / "tfhub_cache"))
    monkeypatch.setenv(variable, str(kit.file))
    source = (str(kit.archives["good"]) if variable == "LLRNET_HUB_CACHE"
              else "deepmind/llr-pretrain-adv/linear/1")
    code = _run(["inspect-hub", source, "--offline"])
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in out + err
    cache = "extraction" if variable == "LLRNET_HUB_CACHE" else "module"
    assert err.splitlines() == [
        f"llrnet inspect-hub: error: the {cache} cache {kit.file} (chosen by ${variable}) is "
        f"not a folder: {kit.file} is a file; point the variable at a folder, or unset it"], err
    assert kit.file.read_text() == "not a folder\n"


def test_no_secret_of_a_url_reaches_the_error_line(
        kit: Kit, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["import-hub", "https://user:hunter2@example.com/m.tar.gz?token=t0k",
                 "--offline", "--out", str(kit.out("x.safetensors"))]) == 2
    out, err = capsys.readouterr()
    assert "hunter2" not in out + err and "t0k" not in out + err


def test_a_full_disk_under_import_hub_out_is_one_line_naming_the_file(
        kit: Kit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    write_bytes = Path.write_bytes

    def full(self: Path, data: bytes) -> int:
        if self.name.endswith(".tmp"):  # simulated: a test cannot fill a real disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    out = tmp_path / "imported.safetensors"
    assert _run(["import-hub", str(FIXTURES / "cifar10"), "--arch", "wrn_10_1_softplus",
                 "--out", str(out)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"llrnet import-hub: error: No space left on device: {out}"]
    assert os.listdir(tmp_path) == []


def test_a_full_disk_under_eval_out_is_one_line_naming_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors import SafetensorError

    import llrnet.eval.state

    def full(*args: Any, **kwargs: Any) -> None:  # safetensors' own text for ENOSPC
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: '
                              'StorageFull, message: "No space left on device" })')

    monkeypatch.setattr(llrnet.eval.state, "save_file", full)
    out = tmp_path / "eval"
    assert _run(["eval", "--suite", "digits", "--model", "digits_wrn", "--attacks", "clean",
                 "--max-images", "4", "--no-progress", "--out", str(out)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and re.fullmatch(
        rf"llrnet eval: error: No space left on device: {re.escape(str(out))}/\S+", lines[0]
    ), lines
    assert not (out / "results.json").exists()


def test_the_corpus_is_large_and_covers_every_command(kit: Kit) -> None:
    assert len(CASES) >= 80
    assert len({case.id for case in CASES}) == len(CASES)
    commands = {case.argv(kit)[0] for case in CASES}
    assert commands >= {"predict", "info", "eval", "train", "demo", "import-hub",
                        "inspect-hub", "data"}


def test_restart_starts_over_a_run_whose_checkpoints_are_all_damaged(
        kit: Kit, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(kit.runs["all_flipped"], run)
    assert _run(["train", "--out", str(run), "--resume", "--no-progress"]) == 1
    assert _run(["train", "--out", str(run), "--restart", "--no-progress"]) == 0
    assert (run / "final.safetensors").is_file()
    assert sorted(p.name for p in (run / "discarded" / "checkpoints").glob("*.pt")) == [
        "step-00000001.pt", "step-00000002.pt"]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 4 and metrics[-1]["final"]


def test_skip_unreadable_scores_the_readable_images_and_says_so(
        kit: Kit, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    assert _run(["eval", "--suite", "bird_or_bicycle", "--model", "llr_pretrain_adv_tiny",
                 "--data", str(kit.bob), "--attacks", "clean", "--no-progress",
                 "--skip-unreadable", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "(2 unreadable image(s) skipped, not scored: see results.json)" in table
    results = json.loads((out / "results.json").read_text())
    assert results["images"] == 6 and results["attacks"]["clean"]["images"] == 6
    assert results["attacks"]["clean"]["skipped_images"] == 2
    skipped = results["skipped"]
    assert [Path(entry["reason"].split(":")[0]).name for entry in skipped] == [
        "bi00000000000001.jpg", "bi00000000000002.jpg"]
    # Bicycles come first (indices 0-3), then birds (4-7), each sorted by id.
    assert [entry["index"] for entry in skipped] == [1, 6]
    assert not {1, 6} & set(results["attacks"]["clean"]["error_indices"])


# --- the Python API ---------------------------------------------------------------------

def _linear() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))


def _api_cases() -> list[tuple[str, Callable[[Path], Any], type[LlrnetError], str]]:
    from llrnet.attacks import PGD, SPSA
    from llrnet.eval import evaluate
    from llrnet.models import BirdOrBicycleClassifier  # noqa: F401 (import check)
    from llrnet.train.llr import LLROptions, llr_regularizer

    x = torch.rand(3, 1, 8, 8)
    y = torch.tensor([0, 1, 1])
    tiny = create_model("llr_pretrain_adv_tiny")
    fn = as_model_fn(tiny)

    def evaluate_on(data: Any, out: Path) -> Any:
        return evaluate(_linear(), "digits", data, out_dir=out, attacks=["clean"],
                        progress=False)

    return [
        ("nan images to an attack", lambda d: PGD(0.1, 2, 0.05)(_linear(), x * float("nan"), y),
         InputError, r"NaN or infinite"),
        ("uint8 images to an attack",
         lambda d: PGD(0.1, 2, 0.05)(_linear(), (x * 255).to(torch.uint8), y),
         InputError, r"must be a float tensor"),
        ("0-255 floats to an attack", lambda d: PGD(0.1, 2, 0.05)(_linear(), x * 255, y),
         InputError, r"x / 255"),
        ("wrong device to an attack", lambda d: PGD(0.1, 2, 0.05)(_linear(), x.to("meta"), y),
         InputError, r"is on meta but the model is on cpu"),
        ("labels >= classes to an attack",
         lambda d: SPSA(0.1, 2, samples=4)(_linear(), x, torch.tensor([0, 1, 5]), seeds=0),
         InputError, r"labels need 6 classes"),
        ("wrong channel count to an attack",
         lambda d: PGD(0.1, 2, 0.05)(_linear(), torch.rand(3, 3, 8, 8), y),
         InputError, r"cannot take images of shape \[3, 3, 8, 8\]"),
        ("labels >= classes to evaluate",
         lambda d: evaluate_on((x, torch.tensor([0, 1, 5])), d / "e"),
         InputError, r"labels need 6 classes"),
        ("wrong channel count to evaluate",
         lambda d: evaluate_on((torch.rand(3, 3, 8, 8), y), d / "e"),
         InputError, r"failed on the first batch"),
        ("out_dir is a file", lambda d: evaluate_on((x, y), _touch(d / "f")), InputError,
         r"exists and is not a folder"),
        ("seed out of range", lambda d: evaluate(_linear(), "digits", (x, y), out_dir=d / "e",
                                                 seed=2**70, progress=False),
         UsageError, r"seed must be in"),
        ("0-255 floats to model_fn",
         lambda d: fn(np.full((1, 32, 32, 3), 200.0, np.float32)),
         InputError, r"x / 255"),
        ("uint8 to model_fn", lambda d: fn(np.zeros((1, 32, 32, 3), np.uint8)),
         InputError, r"float32"),
        ("nan to model_fn", lambda d: fn(np.full((1, 32, 32, 3), np.nan, np.float32)),
         InputError, r"NaN"),
        ("0-255 floats to a model", lambda d: tiny(torch.full((1, 3, 32, 32), 128.0)),
         InputError, r"8-bit images need x / 255"),
        ("normalized images to a model", lambda d: tiny(torch.full((1, 3, 32, 32), -2.0)),
         InputError, r"unnormalized"),
        ("0-255 floats to a WRN", lambda d: create_model("digits_wrn")(
            torch.full((1, 1, 28, 28), 255.0)), InputError, r"8-bit images need x / 255"),
        ("meta tensor to the image contract",
         lambda d: check_images(torch.rand(2, 1, 8, 8, device="meta")), InputError,
         r"on the meta device: it holds no values"),
        ("PGD against a NaN-returning model",
         lambda d: PGD(0.1, 2, 0.05)(_NaNModel(), x, y), InputError,
         r"the model returned NaN or infinite logits for 3 of 3 images"),
        ("llr_regularizer on a NaN input",
         lambda d: llr_regularizer(_linear(), x * float("nan"), y, LLROptions(0.1, 1)),
         InputError, r"x contains NaN or infinite values"),
        ("llr_regularizer on an empty batch",
         lambda d: llr_regularizer(_linear(), x[:0], y[:0], LLROptions(0.1, 1)),
         InputError, r"x is an empty batch"),
        ("llr_regularizer with float labels",
         lambda d: llr_regularizer(_linear(), x, y.float(), LLROptions(0.1, 1)),
         InputError, r"y must be int64 class labels, got torch\.float32"),
        ("bird_probability with a NaN pixel",
         lambda d: tiny.eval().bird_probability(_with_nan(torch.rand(2, 3, 32, 32))),
         InputError, r"the model's input contains NaN values"),
        ("SPSA on float16 images",
         lambda d: SPSA(0.1, 1, samples=4)(_linear(), x.half(), y, seeds=0), InputError,
         r"its weights are torch\.float32 but the images torch\.float16"),
        ("two_class_logits on float16 images",
         lambda d: tiny.eval().two_class_logits(torch.rand(2, 3, 32, 32).half()), InputError,
         r"the images are torch\.float16 but the model's weights are torch\.float32"),
        ("evaluate a meta-device model",
         lambda d: evaluate(_linear().to("meta"), "digits", (x, y), out_dir=d / "e",
                            attacks=["clean"], progress=False),
         InputError, r"tensor '1\.weight' is on the meta device \(it holds no values\)"),
        ("save_weights of a meta-device model",
         lambda d: save_weights(create_model("llr_pretrain_adv_tiny").to("meta"),
                                d / "w.safetensors"),
         InputError, r"tensor '.*' is on the meta device"),
        ("as_model_fn on a nonsense device", lambda d: as_model_fn(tiny, device="nonsense"),
         UsageError, r"device 'nonsense' is not a device"),
        ("create_model with a bad kwarg type",
         lambda d: create_model("digits_wrn", width="two"), UsageError, r"argument width"),
    ]


class _NaNModel(torch.nn.Module):
    """A model whose every logit is NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(64, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1)) * float("nan")


def _with_nan(x: torch.Tensor) -> torch.Tensor:
    x[0, 0, 0, 0] = float("nan")
    return x


def _touch(path: Path) -> Path:
    path.write_text("x")
    return path


API_CASES = _api_cases()


@pytest.mark.parametrize(("name", "call", "error", "message"), API_CASES,
                         ids=[case[0] for case in API_CASES])
def test_api_bad_input_raises_our_error(name: str, call: Callable[[Path], Any],
                                        error: type[LlrnetError], message: str,
                                        tmp_path: Path) -> None:
    with pytest.raises(error, match=message):
        call(tmp_path)


@pytest.mark.parametrize(("error", "line", "code"), [
    (IsADirectoryError(21, "Is a directory", "/data/out"), "error: Is a directory: /data/out", 2),
    (PermissionError(13, "Permission denied", "/root/x"), "error: Permission denied: /root/x", 2),
    (OSError(28, "No space left on device", "/tmp/w"), "error: No space left on device: /tmp/w",
     1),
    (TypeError("unsupported operand"), "internal error: TypeError: unsupported operand (a bug in "
     "llrnet; rerun with LLRNET_DEBUG=1 for the traceback)", 1),
    (RuntimeError(""), "internal error: RuntimeError: RuntimeError (a bug in llrnet; rerun "
     "with LLRNET_DEBUG=1 for the traceback)", 1),
])
def test_describe_gives_every_escaping_exception_one_line(error: Exception, line: str,
                                                          code: int) -> None:
    assert describe(error) == (line, code)


def test_an_unexpected_exception_is_one_line_unless_debugging(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import llrnet.cli.models_cmd as models_cmd

    def broken(args: Any) -> int:
        raise KeyError("boom")

    monkeypatch.setattr(models_cmd, "_models", broken)
    monkeypatch.delenv("LLRNET_DEBUG", raising=False)
    assert _run(["models"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "llrnet models: internal error: KeyError: 'boom' (a bug in llrnet; rerun with "
        "LLRNET_DEBUG=1 for the traceback)"]
    monkeypatch.setenv("LLRNET_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["models"])


def test_a_bad_url_in_the_environment_is_named(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LLRNET_BOB_IMAGE_URL", "ftp:/nohost")
    assert _run(["data", "download", "--root", str(tmp_path / "bob"), "--no-progress"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "llrnet data download: error: $LLRNET_BOB_IMAGE_URL is not an http(s) URL: "
        "'ftp:/nohost' (expected e.g. https://host/path)"]
    assert not (tmp_path / "bob").exists()


def test_image_files_are_read_without_substitution_and_an_all_unreadable_set_is_refused(
        kit: Kit, tmp_path: Path) -> None:
    from llrnet.data.robust import ImageFileDataset
    from llrnet.eval.images import ImageSource

    bad = [(kit.images["truncated.jpg"], 0), (kit.images["text.jpg"], 1)]
    files = ImageFileDataset(bad)
    with pytest.raises(InputError, match=r"unreadable image .*truncated\.jpg"):
        files.load(0)
    assert sorted(files.unreadable([0, 1])) == [0, 1]
    with pytest.raises(InputError, match=r"none of the 2 images can be read"):
        ImageSource(files, skip_unreadable=True)
