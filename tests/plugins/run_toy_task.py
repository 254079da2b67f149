"""Train a toy task in a fresh process: ``python tests/plugins/run_toy_task.py '<json spec>'``.

Used by ``tests/engine/test_task_contract.py`` for the kill/resume test and, launched twice with
``RANK``/``WORLD_SIZE`` set, for the 2-process gloo test. It imports the plug-in
(:mod:`plugins.toy_tasks`), then runs the unchanged engine:
``percepta.engine.launch.train(percepta.config.load(None, overrides))``.

Spec keys: ``overrides`` (list of key=value), ``kill_at`` (``os._exit(17)`` right after that
iteration, like a killed process), ``metrics_out`` (json file for rank 0's final metrics),
``master_port`` (set as ``MASTER_PORT`` first); or ``runs``: a list of such specs, trained one
after the other in this process (each opens and closes its own process group, so give each
run its own ``master_port``), which saves a process start per run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests/: `plugins` is importable


class KillAt:
    """Hook: die without any cleanup right after iteration ``at``."""

    def __init__(self, at: int) -> None:
        self.at = at

    def after_step(self, trainer) -> None:
        if trainer.iteration == self.at:
            sys.stdout.flush()
            os._exit(17)


def main(spec: dict) -> int:
    import torch

    torch.set_num_threads(1)
    import plugins.toy_tasks  # noqa: F401  (registers the toy tasks)

    for run in spec.get("runs", [spec]):
        train_one(run)
    return 0


def train_one(spec: dict) -> None:
    from percepta import config
    from percepta.engine import launch

    if spec.get("master_port"):
        os.environ["MASTER_PORT"] = str(spec["master_port"])
    cfg = config.load(None, list(spec.get("overrides", [])))
    hooks = [KillAt(int(spec["kill_at"]))] if spec.get("kill_at") else None
    metrics = launch.train(cfg, hooks=hooks)
    if int(os.environ.get("RANK", "0")) == 0 and spec.get("metrics_out"):
        Path(spec["metrics_out"]).write_text(json.dumps(metrics))


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
