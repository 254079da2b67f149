"""The detection-landing diagnostic of experiments/ (its counts are quoted in experiments/README.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from where_detections_land import landing  # noqa: E402


def test_landing_bins_each_confident_detection_once():
    truth = [[("square", [0, 0, 10, 10]), ("circle", [20, 20, 30, 30])], []]
    preds = [
        {
            "boxes": torch.tensor(
                [
                    [0, 0, 10, 10],  # on the square: true positive
                    [20, 20, 30, 31],  # on the circle (IoU 0.91)
                    [0, 0, 10, 30],  # square IoU 1/3: poor localisation
                    [50, 50, 60, 60],  # nothing there: background
                    [0, 0, 10, 10],  # below the score threshold: ignored
                    [20, 20, 30, 30],
                ]
            ),  # another class's channel: ignored
            "scores": torch.tensor([0.9, 0.8, 0.7, 0.6, 0.2, 0.9]),
            "labels": torch.tensor([1, 1, 1, 1, 1, 0]),
        },
        {
            "boxes": torch.tensor([[5, 5, 9, 9]]),
            "scores": torch.tensor([0.9]),
            "labels": torch.tensor([1]),
        },  # an image without objects: background
    ]
    bins = landing(preds, truth, cls=1, name="square", score=0.3)
    assert dict(bins) == {
        "true positive": 1,
        "on circle": 1,
        "poor localisation": 1,
        "background": 2,
    }
