"""The engine is task-neutral: two test-only tasks run through it unchanged (issue 10, §1).

The tasks come from a plug-in (``tests/plugins``, see :mod:`plugins.toy_components`):
``toy_given_boxes`` (a PredCls-like model that needs the boxes and labels at inference,
accuracy, higher is better) and ``toy_pairs`` (a full-reference scorer that needs the
``reference`` image, RMSE, LOWER is better). Through ``percepta.engine.launch.train`` and the
CLI (in-process, where this module imports the plug-in, and in a fresh process that finds it
through ``PERCEPTA_PLUGINS=plugins.toy_tasks``) they train, evaluate, checkpoint, keep
``best.pt`` in their declared direction, resume exactly after a hard kill and give under 2
gloo processes what one process gives.

Independent checks: metrics are recomputed by hand (numpy) from the checkpointed model's
predictions, ``best.pt`` is checked against the ``metrics.jsonl`` evaluation lines, resumed and
DDP weights against an uninterrupted single-process run. Tolerances: resume 1e-6 (the same
operations in the same order), DDP 1e-5 (gradients are averaged over ranks, so float sums are
ordered differently), hand-computed metrics 1e-6.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.append(str(TESTS))

from percepta import cli, config  # noqa: E402
from percepta.engine import checkpoint as ck  # noqa: E402
from percepta.engine import launch  # noqa: E402
from percepta.engine.trainer import Trainer  # noqa: E402
from percepta.errors import CheckpointError, ConfigError, DataError, PerceptaError  # noqa: E402
from percepta.inference import run_model  # noqa: E402
from plugins import toy_components as toy  # noqa: E402  (defines; registers nothing)

RUNNER = TESTS / "plugins" / "run_toy_task.py"

TASKS = {
    toy.TASK_BOXES: {
        "model": "toy_boxes_model",
        "data": "toy_boxes_data",
        "evaluator": "toy_accuracy",
        "primary": "accuracy",
        "higher": True,
    },
    toy.TASK_PAIRS: {
        "model": "toy_pairs_model",
        "data": "toy_pairs_data",
        "evaluator": "toy_rmse",
        "primary": "rmse",
        "higher": False,
    },
}
TRAIN = [
    "train.device=cpu",
    "train.progress=false",
    "train.tensorboard=false",
    "train.batch_size=4",
    "train.log_period=2",
    "train.checkpoint_period=0",
    "train.scheduler.name=constant",
    "train.optimizer.name=adamw",
    "train.optimizer.lr=0.02",
]


@pytest.fixture(scope="module", autouse=True)
def toy_tasks():
    """Import the plug-in (registration happens on import); unregister after this module."""
    importlib.import_module("plugins.toy_tasks")
    toy.register()  # again: an earlier test module may have unregistered them
    yield
    toy.unregister()


def overrides(task: str, out: Path, name: str, *extra: str) -> list[str]:
    t = TASKS[task]
    return [
        f"name={name}",
        f"output_dir={out}",
        f"model.name={t['model']}",
        f"data.train.name={t['data']}",
        f"data.val.name={t['data']}",
        "data.val.num_images=10",
        f"evaluator.name={t['evaluator']}",
        *TRAIN,
        *extra,
    ]


def run_folder(out: Path, name: str) -> Path:
    return out / name


def eval_lines(run_dir: Path) -> list[dict]:
    lines = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if "eval" in r]


def metric_by_hand(model: torch.nn.Module, dataset, task: str) -> float:
    """The primary metric of ``model`` on ``dataset``, one image at a time, in numpy."""
    model.eval()
    hits, errors = [], []
    with torch.no_grad():
        for i in range(len(dataset)):
            image, target = dataset[i]
            if task == toy.TASK_BOXES:
                pred = model([image], [{"boxes": target["boxes"], "labels": target["labels"]}])
                hits += (pred[0]["labels"].numpy() == target["labels"].numpy()).tolist()
            else:
                pred = model([image], [{"reference": target["reference"]}])
                errors.append(float(pred[0]["score"]) - float(target["score"]))
    if task == toy.TASK_BOXES:
        return float(np.mean(hits))
    return float(np.sqrt(np.mean(np.square(errors))))


def val_dataset(task: str, n: int = 10):
    if task == toy.TASK_BOXES:
        return toy.ToyBoxesDataset(n, seed=1)
    return toy.ToyPairsDataset(n, seed=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, toy_tasks) -> dict[str, Path]:
    """One 12-iteration run per task (evaluated every 2 iterations) through launch.train."""
    out = tmp_path_factory.mktemp("trained")
    runs = {}
    torch.set_num_threads(1)
    for task in TASKS:
        cfg = config.load(
            None,
            overrides(
                task,
                out,
                task,
                "train.max_iters=12",
                "train.eval_period=2",
                "train.optimizer.lr=0.005",
            ),
        )
        assert cfg.task == task  # filled from the model's registered task
        metrics = launch.train(cfg)
        assert TASKS[task]["primary"] in metrics
        runs[task] = run_folder(out, task)
    return runs


# ---------------------------------------------------------------- train / evaluate / best.pt
@pytest.mark.parametrize("task", list(TASKS))
def test_train_checkpoints_and_keeps_best_in_the_declared_direction(trained, task):
    run = trained[task]
    primary, higher = TASKS[task]["primary"], TASKS[task]["higher"]
    lines = eval_lines(run)
    assert [r["iteration"] for r in lines] == [2, 4, 6, 8, 10, 12]
    values = [r["eval"][primary] for r in lines]
    best_value = max(values) if higher else min(values)
    worst_value = min(values) if higher else max(values)
    assert best_value != worst_value, f"{primary} never changed: the direction is untested"
    best_iter = lines[values.index(best_value)]["iteration"]  # the first one reaching it

    best = ck.load_checkpoint(run / "checkpoints" / "best.pt")
    last = ck.load_checkpoint(run / "checkpoints" / "last.pt")
    assert best["task"] == last["task"] == task
    assert best["best"]["metric"] == primary and best["best"]["higher_is_better"] is higher
    assert best["best"]["value"] == pytest.approx(best_value, abs=1e-12)
    assert best["best"]["iteration"] == best["iteration"] == best_iter
    assert last["iteration"] == 12 and last["best"] == best["best"]

    # the model options named after dataset facts were filled from the data's meta
    model_cfg = last["config"]["model"]
    if task == toy.TASK_BOXES:
        assert model_cfg["class_names"] == toy.CLASS_NAMES and model_cfg["num_classes"] == 3
    else:
        assert model_cfg["score_range"] == toy.SCORE_RANGE

    # best.pt rebuilds its model from the embedded config alone and scores what was logged
    model = ck.load_model(run / "checkpoints" / "best.pt")
    assert metric_by_hand(model, val_dataset(task), task) == pytest.approx(best_value, abs=1e-6)


@pytest.mark.parametrize("task", list(TASKS))
def test_cli_train_then_eval_json(tmp_path, capsys, task):
    argv = ["train", *overrides(task, tmp_path, "cli", "train.max_iters=6", "train.eval_period=3")]
    assert cli.main(argv) == 0
    run = run_folder(tmp_path, "cli")
    capsys.readouterr()
    last = run / "checkpoints" / "last.pt"
    assert cli.main(["eval", str(last), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    primary = TASKS[task]["primary"]
    by_hand = metric_by_hand(ck.load_model(last), val_dataset(task), task)
    assert printed[primary] == pytest.approx(by_hand, abs=1e-6)
    assert eval_lines(run)[-1]["eval"][primary] == pytest.approx(by_hand, abs=1e-6)
    if task == toy.TASK_BOXES:  # every validation box / image once
        assert printed["num_boxes"] == sum(len(t["labels"]) for _, t in val_dataset(task))
    else:
        assert printed["count"] == 10


# ---------------------------------------------------------------- exact resume after a kill
def _run(spec: dict, env_extra: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", **(env_extra or {}))
    if env_extra is None:
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            env.pop(key, None)
    return subprocess.Popen(
        [sys.executable, str(RUNNER), json.dumps(spec)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait(procs: list[subprocess.Popen], timeout: float = 240) -> list[tuple[int, str]]:
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        results.append((p.returncode, (out + err)[-3000:]))
    return results


RESUME = [
    "train.max_iters=8",
    "train.checkpoint_period=4",
    "train.eval_period=4",
    "train.grad_clip=1.0",
    "train.scheduler.name=cosine",
    "train.scheduler.warmup_iters=3",
]


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path, task):
    # dropout 0.1 (the default) makes the result depend on the restored RNG state
    straight = tmp_path / "straight"
    launch.train(config.load(None, overrides(task, straight, "r", *RESUME)))
    reference = ck.load_checkpoint(straight / "r" / "checkpoints" / "last.pt")

    killed = tmp_path / "killed"
    spec = {"overrides": overrides(task, killed, "r", *RESUME), "kill_at": 6}
    [(rc, log)] = _wait([_run(spec)])
    assert rc == 17, log
    last = killed / "r" / "checkpoints" / "last.pt"
    assert ck.load_checkpoint(last)["iteration"] == 4

    launch.train(config.load(None, overrides(task, killed, "r", *RESUME, "resume=true")))
    resumed = ck.load_checkpoint(last)
    assert resumed["iteration"] == 8 and resumed["best"] == reference["best"]
    for key, value in reference["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, atol=1e-6, rtol=0)
    ref_iters = [r["iteration"] for r in eval_lines(straight / "r")]
    assert [r["iteration"] for r in eval_lines(killed / "r")] == ref_iters == [4, 8]


# ---------------------------------------------------------------- 2 gloo processes == 1
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# 20 training samples, global batch 8: 5 iterations cross an epoch; 5 validation images give
# uneven shards (3 + 2) whose summed metric states must be synced.
DDP = [
    "train.max_iters=5",
    "train.batch_size=8",
    "data.train.num_images=20",
    "data.val.num_images=5",
    "model.dropout=0.0",
    "train.optimizer.name=sgd",
    "train.optimizer.lr=0.2",
    "train.optimizer.momentum=0.9",
]


@pytest.mark.dist
@pytest.mark.slow
def test_two_gloo_processes_match_one(tmp_path):
    # both tasks in the same two processes, one after the other (a process start is ~10 s)
    runs = [
        {
            "overrides": overrides(task, tmp_path / "ddp", task, *DDP),
            "metrics_out": str(tmp_path / f"{task}.json"),
            "master_port": _free_port(),
        }
        for task in TASKS
    ]
    procs = [
        _run(
            {"runs": runs},
            {"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"},
        )
        for r in range(2)
    ]
    results = _wait(procs)
    assert all(rc == 0 for rc, _ in results), results

    for task in TASKS:
        ddp = ck.load_checkpoint(tmp_path / "ddp" / task / "checkpoints" / "last.pt")
        assert ddp["world_size"] == 2 and ddp["task"] == task
        ddp_metrics = json.loads((tmp_path / f"{task}.json").read_text())
        cfg = config.load(None, overrides(task, tmp_path / "one", task, *DDP))
        single_metrics = launch.train(cfg)
        single = ck.load_checkpoint(tmp_path / "one" / task / "checkpoints" / "last.pt")
        torch.manual_seed(0)  # launch.train seeds with cfg.seed before building the model
        init = launch.prepare(cfg)[1].state_dict()
        for key, value in single["model"].items():
            assert not torch.allclose(value, init[key]), f"{task}: {key} did not train"
            torch.testing.assert_close(ddp["model"][key], value, atol=1e-5, rtol=0)
        primary = TASKS[task]["primary"]
        assert ddp_metrics[primary] == pytest.approx(single_metrics[primary], abs=1e-6)
        count = "num_boxes" if task == toy.TASK_BOXES else "count"
        assert ddp_metrics[count] == single_metrics[count]  # every image once, none padded


# ---------------------------------------------------------------- clear errors
def test_unknown_task_is_a_config_error():
    with pytest.raises(ConfigError, match="segmentation.*Known tasks: .*toy_given_boxes"):
        config.load(None, ["task=segmentation"])


def test_task_and_model_mismatch_is_a_config_error():
    with pytest.raises(
        ConfigError, match="'toy_boxes_model' is a 'toy_given_boxes' model but task='toy_pairs'"
    ):
        config.load(None, ["task=toy_pairs", "model.name=toy_boxes_model"])


def test_eval_with_the_task_overridden_is_a_clear_error(trained, capsys):
    ckpt = trained[toy.TASK_BOXES] / "checkpoints" / "best.pt"
    with pytest.raises(ConfigError, match="'toy_given_boxes' model but task='toy_pairs'"):
        launch.evaluate_checkpoint(str(ckpt), ["task=toy_pairs"])
    capsys.readouterr()
    assert cli.main(["eval", str(ckpt), "task=toy_pairs", "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "toy_pairs" in err


def test_eval_of_another_tasks_checkpoint_names_the_task(trained):
    ckpt = trained[toy.TASK_BOXES] / "checkpoints" / "best.pt"
    pairs = TASKS[toy.TASK_PAIRS]
    with pytest.raises(CheckpointError, match="trained for task 'toy_given_boxes'.*'toy_pairs'"):
        launch.evaluate_checkpoint(
            str(ckpt),
            [
                "task=toy_pairs",
                f"model.name={pairs['model']}",
                f"data.val.name={pairs['data']}",
                f"evaluator.name={pairs['evaluator']}",
            ],
        )


def test_missing_inference_inputs_are_a_one_line_data_error(trained, capsys):
    ckpt = trained[toy.TASK_PAIRS] / "checkpoints" / "best.pt"
    assert cli.main(["eval", str(ckpt), "data.val.with_reference=false"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: image 0:") and "['reference']" in err

    # the same through the Trainer, for the given-boxes model on data without boxes
    cfg = config.load(None, overrides(toy.TASK_BOXES, trained[toy.TASK_BOXES].parent, "e"))
    model = ck.load_model(trained[toy.TASK_BOXES] / "checkpoints" / "best.pt")
    trainer = Trainer(
        cfg, model, None, val_dataset=toy.ToyPairsDataset(3, seed=5), evaluator=toy.ToyAccuracy()
    )
    with pytest.raises(DataError, match=r"^image 0: ToyBoxesModel needs \['boxes', 'labels'\]"):
        trainer.evaluate()


def test_given_boxes_model_fails_loudly_without_boxes():
    model = toy.build_toy_boxes_model(toy.ToyBoxesModelOptions(num_classes=3)).eval()
    image = toy.ToyBoxesDataset(1)[0][0]
    with pytest.raises(DataError, match="given boxes"):
        model([image])
    with pytest.raises(DataError, match=r"needs \['boxes', 'labels'\] at inference"):
        run_model(model, [image], None)


# ---------------------------------------------------------------- nested component sections
WRAPPER = ["model.name=toy_pairs_wrapper", "model.inner.name=toy_pairs_model"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["model.inner.widht=3"],
            r"unknown config key 'model\.inner\.widht'.*Did you mean 'width'",
        ),
        (
            ["model.inner.name=toy_pairs_modle"],
            r"model\.inner\.name: unknown model "
            r"'toy_pairs_modle'\. Did you mean 'toy_pairs_model'",
        ),
        (["model.inner.width=wide"], r"'model\.inner\.width' has a wrong type"),
    ],
)
def test_nested_sections_are_validated_with_suggestions(extra, message):
    with pytest.raises(ConfigError, match=message):
        config.load(None, [*WRAPPER, *extra])


def test_nested_section_of_another_task_is_refused(tmp_path):
    cfg = config.load(
        None,
        overrides(
            toy.TASK_PAIRS,
            tmp_path,
            "w",
            "model.name=toy_pairs_wrapper",
            "model.inner.name=toy_boxes_model",
        ),
    )
    with pytest.raises(ConfigError, match="'toy_boxes_model' is a 'toy_given_boxes' model"):
        launch.prepare(cfg)


def test_nested_model_trains_and_rebuilds_from_its_checkpoint(tmp_path):
    cfg = config.load(
        None,
        overrides(
            toy.TASK_PAIRS, tmp_path, "w", *WRAPPER, "model.inner.width=5", "train.max_iters=4"
        ),
    )
    assert cfg.task == toy.TASK_PAIRS and cfg.model.inner.width == 5
    metrics = launch.train(cfg)
    ckpt_path = tmp_path / "w" / "checkpoints" / "last.pt"
    inner = ck.load_checkpoint(ckpt_path)["config"]["model"]["inner"]
    assert inner["score_range"] == toy.SCORE_RANGE and inner["width"] == 5  # filled by resolve
    model = ck.load_model(ckpt_path)
    assert model.inner.mlp[0].out_features == 5
    by_hand = metric_by_hand(model, val_dataset(toy.TASK_PAIRS), toy.TASK_PAIRS)
    assert math.isfinite(by_hand) and by_hand == pytest.approx(metrics["rmse"], abs=1e-6)


# ---------------------------------------------------------------- plug-in discovery by the CLI
@pytest.mark.slow
def test_a_fresh_cli_process_finds_plugins_named_in_the_environment(trained):
    ckpt = trained[toy.TASK_PAIRS] / "checkpoints" / "best.pt"
    env = dict(
        os.environ,
        PERCEPTA_PLUGINS="plugins.toy_tasks",
        CUDA_VISIBLE_DEVICES="",
        PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "percepta", "eval", str(ckpt), "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rmse" in json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_plugin_that_cannot_be_imported_is_a_one_line_error(monkeypatch):
    from percepta import registry

    monkeypatch.setenv("PERCEPTA_PLUGINS", "plugins.toy_tasks, plugins.no_such_plugin")
    monkeypatch.setattr(registry, "_imported", False)
    with pytest.raises(PerceptaError, match="PERCEPTA_PLUGINS names 'plugins.no_such_plugin'") as e:
        registry.import_all()
    assert len(str(e.value).splitlines()) == 1
