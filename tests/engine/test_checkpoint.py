"""Checkpoint files: atomic writes under a full disk, validation errors, RNG capture, load_model."""

from __future__ import annotations

import errno
import random

import numpy as np
import pytest
import torch
from engine_toy import ToyModel, build, make_cfg

import percepta
from percepta.engine import checkpoint as ck
from percepta.engine.trainer import Trainer
from percepta.errors import CheckpointError
from percepta.registry import MODELS, import_all


def _state(tmp_path, **over):
    cfg = make_cfg(tmp_path)
    state = {
        "format": ck.FORMAT,
        "version": ck.VERSION,
        "percepta_version": percepta.__version__,
        "task": "detection",
        "config": percepta.config.to_dict(cfg),
        "model": ToyModel().state_dict(),
        "iteration": 3,
        "ema": None,
    }
    state.update(over)
    return state


def _equal_states(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_roundtrip_is_weights_only_loadable(tmp_path):
    path = ck.save_checkpoint(_state(tmp_path), tmp_path / "ck" / "last.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "percepta-checkpoint" and raw["iteration"] == 3
    ckpt = ck.load_checkpoint(path)
    assert ckpt["task"] == "detection"
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_full_disk_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    good = _state(tmp_path, iteration=10)
    ck.save_checkpoint(good, path)
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial bytes of a zip archive")  # half a file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*last\.pt.*disk full"):
        ck.save_checkpoint(_state(tmp_path, iteration=20), path)
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left
    again = ck.load_checkpoint(path)
    assert again["iteration"] == 10 and _equal_states(again["model"], good["model"])


def test_trainer_stops_on_full_disk_with_last_checkpoint_intact(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path, ["train.checkpoint_period=2", "train.max_iters=6"])
    model, train_ds, _, _ = build(cfg)
    real_save, calls = torch.save, []

    def save_once(obj, f, *args, **kwargs):
        calls.append(obj["iteration"])
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_once)
    trainer = Trainer(cfg, model, train_ds)
    with pytest.raises(CheckpointError, match="last.pt"):
        trainer.fit()
    monkeypatch.setattr(torch, "save", real_save)
    assert calls == [2, 4]
    ckpt_dir = tmp_path / "toy" / "checkpoints"
    assert [p.name for p in ckpt_dir.iterdir()] == ["last.pt"]
    assert ck.load_checkpoint(ckpt_dir / "last.pt")["iteration"] == 2


def test_missing_corrupt_truncated_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*nope\.pt"):
        ck.load_checkpoint(tmp_path / "nope.pt")
    path = ck.save_checkpoint(_state(tmp_path), tmp_path / "good.pt")
    data = path.read_bytes()

    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"trunc\.pt: the file is corrupt or truncated"):
        ck.load_checkpoint(trunc)

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00\x01not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match=r"junk\.pt: the file is corrupt or truncated"):
        ck.load_checkpoint(junk)

    plain = tmp_path / "plain.pt"
    torch.save(ToyModel().state_dict(), plain)
    with pytest.raises(CheckpointError, match=r"plain\.pt is not a percepta checkpoint"):
        ck.load_checkpoint(plain)

    evil = tmp_path / "evil.pt"
    torch.save({"format": ck.FORMAT, "obj": _Unsafe()}, evil)
    with pytest.raises(CheckpointError, match=r"evil\.pt.*weights_only"):
        ck.load_checkpoint(evil)

    future = ck.save_checkpoint(_state(tmp_path, version=2), tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match=r"future\.pt has format version 2.*reads version 1"):
        ck.load_checkpoint(future)

    with pytest.raises(CheckpointError, match=r"is not a file"):
        ck.load_checkpoint(tmp_path)


class _Unsafe:
    pass


def test_check_task_refuses_other_task(tmp_path):
    path = ck.save_checkpoint(_state(tmp_path, task="quality"), tmp_path / "q.pt")
    ckpt = ck.load_checkpoint(path)
    ck.check_task(ckpt, "quality", path)
    with pytest.raises(CheckpointError, match=r"q\.pt was trained for task 'quality'.*'detection'"):
        ck.check_task(ckpt, "detection", path)


def test_resume_refuses_checkpoint_of_other_task(tmp_path):
    cfg = make_cfg(tmp_path, ["resume=true"])
    ck.save_checkpoint(
        _state(tmp_path, task="scene_graph"), tmp_path / "toy" / "checkpoints" / "last.pt"
    )
    model, train_ds, _, _ = build(cfg)
    with pytest.raises(CheckpointError, match="trained for task 'scene_graph'"):
        Trainer(cfg, model, train_ds).fit()


def test_rng_capture_restore_roundtrip(tmp_path):
    ckpt = _state(tmp_path)  # builds a model: draws from torch's RNG, so before the capture
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    np.random.standard_normal()
    ckpt["rng"] = ck.capture_rng()
    path = ck.save_checkpoint(ckpt, tmp_path / "rng.pt")
    expected = (
        random.random(),
        random.gauss(0, 1),
        np.random.rand(3).tolist(),
        np.random.standard_normal(),
        torch.rand(3),
    )
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ck.restore_rng(ck.load_checkpoint(path)["rng"])
    got = (
        random.random(),
        random.gauss(0, 1),
        np.random.rand(3).tolist(),
        np.random.standard_normal(),
        torch.rand(3),
    )
    assert got[:4] == expected[:4] and torch.equal(got[4], expected[4])


def test_load_model_rebuilds_from_embedded_config_with_ema_weights(tmp_path, monkeypatch):
    import_all()  # register everything first: the copy below is thrown away after the test
    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))
    MODELS.add("toy", lambda opts: ToyModel(), help="engine test toy")
    cfg = make_cfg(tmp_path, ["train.ema=true", "train.ema_decay=0.5", "train.max_iters=3"])
    model, train_ds, _, _ = build(cfg)
    trainer = Trainer(cfg, model, train_ds)
    trainer.fit()
    path = tmp_path / "toy" / "checkpoints" / "last.pt"
    loaded = ck.load_model(path)
    assert not loaded.training
    ema_state = trainer.ema.module.state_dict()
    assert _equal_states(loaded.state_dict(), ema_state)
    assert not _equal_states(ema_state, trainer.model.state_dict())  # EMA really differs
    assert loaded.percepta_config.train.ema is True
    via_api = percepta.load(str(path))
    assert _equal_states(via_api.state_dict(), ema_state)
