"""What a new user hits first in the CLI (issue 10, defect 9): a bad ``--device`` is one line,
a predict run that reads no image fails, skip reasons are clean, checkpoint mismatches are
spelled out, ``--help`` shows defaults, ``percepta bench`` works from any folder."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
from torchvision.io import write_png

from percepta import cli

REPO = Path(__file__).resolve().parents[1]
CPP_PATH = re.compile(r"\.(cpp|h):\d+|/__w/|csrc")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A randomly initialised tiny CenterNet (64 px, 3 classes) in the checkpoint format."""
    import percepta
    from percepta import config
    from percepta.engine.build import build_model
    from percepta.engine.checkpoint import FORMAT, VERSION, save_checkpoint

    cfg = config.load(
        None,
        [
            "name=ux",
            "task=detection",
            "model.name=centernet",
            "model.backbone=resnet18",
            "model.input_size=64",
            "model.neck_channels=[32,32,32]",
            "model.head_conv=16",
            "model.num_classes=3",
            "model.class_names=[a,b,c]",
            "model.category_ids=[1,2,3]",
        ],
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    path = tmp_path_factory.mktemp("ux") / "tiny.pt"
    return save_checkpoint(
        {
            "format": FORMAT,
            "version": VERSION,
            "percepta_version": percepta.__version__,
            "task": "detection",
            "config": config.to_dict(cfg),
            "model": model.state_dict(),
            "iteration": 0,
        },
        path,
    )


@pytest.fixture()
def images(tmp_path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    write_png(
        torch.randint(0, 256, (3, 40, 56), dtype=torch.uint8, generator=g), str(folder / "good.png")
    )
    return folder


def _one_line_error(capsys) -> str:
    """The error line: stderr ends with exactly one ``error: ...`` line (after any progress bar
    output) and holds no traceback."""
    err = capsys.readouterr().err
    lines = [x for x in err.replace("\r", "\n").splitlines() if x.strip()]
    assert lines and lines[-1].startswith("error: "), err
    assert sum(x.startswith("error") for x in lines) == 1 and "Traceback" not in err, err
    return lines[-1]


# ------------------------------------------------------------------------------- --device
def test_unknown_device_is_one_line(ckpt, images, tmp_path, capsys):
    code = cli.main(
        ["predict", str(ckpt), str(images), "--out", str(tmp_path / "o"), "--device", "banana"]
    )
    assert code == 2 and "banana" in _one_line_error(capsys)


def test_cuda_device_without_cuda_is_one_line(ckpt, images, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = cli.main(
        ["predict", str(ckpt), str(images), "--out", str(tmp_path / "o"), "--device", "cuda"]
    )
    err = _one_line_error(capsys)
    assert code == 2 and "CUDA is not available" in err and "--device cpu" in err


# ------------------------------------------------------------------------------- skipped files
def _bad_files(folder: Path) -> None:
    (folder / "text.png").write_bytes(b"not a png at all")
    (folder / "empty.jpg").write_bytes(b"")
    jpg = REPO.parent / "shared" / "data" / "tiny_coco" / "val2017" / "000000397133.jpg"
    if jpg.is_file():
        (folder / "truncated.jpg").write_bytes(jpg.read_bytes()[:3000])


def test_a_run_that_reads_no_image_fails(ckpt, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    _bad_files(folder)
    code = cli.main(["predict", str(ckpt), str(folder), "--out", str(tmp_path / "o")])
    err = _one_line_error(capsys)
    assert code == 2 and "none of the" in err and "nothing was written" in err
    assert not (tmp_path / "o" / "predictions.json").exists()


def test_skip_messages_name_the_file_without_cpp_paths(ckpt, images, tmp_path, capsys):
    _bad_files(images)
    arr = torch.randint(0, 256, (30, 20, 3), dtype=torch.uint8).numpy()
    from PIL import Image

    Image.fromarray(arr).save(images / "pic.bmp")  # not decodable by torchvision: PIL reads it
    out = tmp_path / "o"
    assert cli.main(["predict", str(ckpt), str(images), "--out", str(out)]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("skipped")]
    expected = {
        "text.png": "not a supported image format",
        "empty.jpg": "empty file",
        "truncated.jpg": "truncated",
    }
    expected = {k: v for k, v in expected.items() if (images / k).exists()}
    assert len(lines) == len(expected)
    for line in lines:
        assert not CPP_PATH.search(line), line
        name = next(k for k in expected if k in line)
        assert str(images / name) in line and expected[name] in line, line
    records = json.loads((out / "predictions.json").read_text())
    assert {Path(r["file_name"]).name for r in records} <= {"good.png", "pic.bmp"}
    assert len(list((out / "images").glob("*.png"))) == 2


# ------------------------------------------------------------------------------- checkpoints
def test_weight_mismatch_lists_keys_and_shapes(ckpt, images, tmp_path, capsys):
    from percepta.engine.checkpoint import save_checkpoint

    state = torch.load(ckpt, weights_only=True)
    state["config"]["model"].update(
        num_classes=5, class_names=list("abcde"), category_ids=[1, 2, 3, 4, 5]
    )
    weights = state["model"]
    gone = "head.reg.0.weight"
    del weights[gone]
    weights["extra.weight"] = torch.zeros(2)
    bad = save_checkpoint(state, tmp_path / "bad.pt")
    assert cli.main(["predict", str(bad), str(images), "--out", str(tmp_path / "o")]) == 2
    err = _one_line_error(capsys)
    assert f"1 missing keys: {gone}" in err
    assert "1 unexpected keys: extra.weight" in err
    # the class head's last conv and bias: 3 classes in the weights, 5 in the config
    assert "2 shape mismatches" in err
    assert "head.cls.2.weight (checkpoint [3, 16, 1, 1], model [5, 16, 1, 1])" in err


def test_init_weights_mismatch_lists_keys(ckpt, tmp_path):
    from percepta.engine.checkpoint import load_model_weights
    from percepta.errors import CheckpointError

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1))
    with pytest.raises(
        CheckpointError,
        match=r"no weight matches.*2 missing keys: 0.weight, "
        r"0.bias.*unexpected keys",
    ):
        load_model_weights(model, ckpt)


# ------------------------------------------------------------------------------- --help
def _parsers(parser: argparse.ArgumentParser, path: list[str]):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, [*path, name])


def test_help_shows_defaults_everywhere(capsys):
    checked = 0
    for path, parser in _parsers(cli.build_parser(), []):
        with pytest.raises(SystemExit):
            cli.main([*path, "--help"])
        text = " ".join(capsys.readouterr().out.split())  # undo line wrapping
        for action in parser._actions:
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                assert f"(default: {action.default})" in text, (path, action.dest)
                checked += 1
    assert checked >= 12


# ------------------------------------------------------------------------------- bench
def test_bench_finds_the_repository_benchmarks_from_any_folder(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda argv, **kw: calls.append(argv) or 0)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["bench", "det_eval"]) == 0
    assert [Path(c[-1]) for c in calls] == [REPO / "benchmarks" / "bench_det_eval.py"]


def test_bench_errors_are_clear(tmp_path, monkeypatch, capsys):
    assert cli.main(["bench", "no_such_bench"]) == 2
    assert "available: " in _one_line_error(capsys)
    monkeypatch.setattr(cli, "benchmarks_dir", lambda: tmp_path / "nowhere")
    assert cli.main(["bench"]) == 2
    err = _one_line_error(capsys)
    assert str(tmp_path / "nowhere") in err and "source checkout" in err
