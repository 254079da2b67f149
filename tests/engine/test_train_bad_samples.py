"""The trainer with bad samples: skipped with a warning (any num_workers), fatal past a fraction.

With the default ``train.max_skip_fraction`` (0.05, also the loader's default): 1 bad sample of
the toy's 24 (4.2%) is tolerated, 2 (8.3%) stop the run.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from engine_toy import build, make_cfg

from percepta.engine.trainer import Trainer
from percepta.errors import DataError


class WithBadSamples(torch.utils.data.Dataset):
    """The toy training data where the indices in ``bad`` raise DataError like a corrupt image."""

    def __init__(self, base, bad: set[int]) -> None:
        self.base, self.bad = base, bad

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        if i in self.bad:
            raise DataError(f"toy.json: image id {i}: file img{i:02d}.png cannot decode")
        return self.base[i]


def _fit(tmp_path, workers: int, bad: set[int]) -> Trainer:
    cfg = make_cfg(tmp_path, [f"train.num_workers={workers}", "train.max_iters=7"])
    model, train_ds, _, _ = build(cfg)  # 24 samples, batch 4: iteration 7 is in epoch 1
    trainer = Trainer(cfg, model, WithBadSamples(train_ds, bad))
    trainer.fit()
    return trainer


@pytest.mark.parametrize("workers", [0, 2])
def test_training_skips_a_bad_sample_and_finishes(tmp_path, workers):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer = _fit(tmp_path, workers, bad={3})
    assert trainer.iteration == 7
    msgs = [str(w.message) for w in record if "skipping a sample" in str(w.message)]
    assert len(msgs) == 1 and "img03.png" in msgs[0]


@pytest.mark.parametrize("workers", [0, 2])
def test_training_stops_past_the_fraction_with_a_one_line_data_error(tmp_path, workers):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError) as info:
            _fit(tmp_path, workers, bad={3, 11})
    msg = str(info.value)
    assert "2 of 24 samples" in msg and "img03.png" in msg and "img11.png" in msg
    assert "\n" not in msg and "Traceback" not in msg
