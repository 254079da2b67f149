"""Distillation wiring: teachers from checkpoints, class mapping by name, label-free training,
and every start-up refusal the issue names (each message names the teacher and the class)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from percepta import cli, config
from percepta.data.synthetic.detection import generate_detection
from percepta.detection.centernet import CenterNetConfig, build_centernet
from percepta.detection.distill import (
    DistillationError,
    Distiller,
    Teacher,
    attach_distiller,
    load_teachers,
)
from percepta.engine.launch import prepare
from percepta.errors import PerceptaError
from percepta.losses.distill import DistillConfig, TeacherConfig, kd_heatmap_loss, peak_weight_map

TINY = "{name: centernet, backbone: resnet18, input_size: 64, neck_channels: [16, 16, 16], head_conv: 8}"
NAMES = ["circle", "square", "triangle", "star", "arrow", "cross"]


def _tiny(names, **kw) -> torch.nn.Module:
    cfg = CenterNetConfig(num_classes=len(names), class_names=list(names), input_size=64,
                          neck_channels=[16, 16, 16], head_conv=8, **kw)
    return build_centernet(cfg).eval()


def _subset_json(src: Path, dst: Path, keep: list[str]) -> Path:
    d = json.loads(src.read_text())
    ids = {c["id"] for c in d["categories"] if c["name"] in keep}
    d["categories"] = [c for c in d["categories"] if c["id"] in ids]
    d["annotations"] = [a for a in d["annotations"] if a["category_id"] in ids]
    dst.write_text(json.dumps(d))
    return dst


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    data = root / "data"
    generate_detection(data, num_images=12, image_size=64, val_fraction=0.25, seed=5, workers=1)
    cfg = root / "teacher.yaml"
    cfg.write_text(f"""
name: teacher
output_dir: {root / 'runs'}
model: {TINY}
data:
  root: {data}
  train: {{name: coco, ann_file: annotations/instances_train.json, augment: false}}
  val: {{name: coco, ann_file: annotations/instances_val.json}}
evaluator: {{name: coco}}
train: {{max_iters: 2, batch_size: 4, log_period: 1, progress: false, tensorboard: false}}
""")
    assert cli.main(["train", str(cfg)]) == 0
    return root, data, root / "runs" / "teacher" / "checkpoints" / "last.pt"


def _student_cfg(root: Path, data: Path, name: str, extra: list[str]):
    return config.load(None, [
        f"name={name}", f"output_dir={root / 'runs'}", f"model={TINY}", f"data.root={data}",
        "data.train={name: coco, ann_file: annotations/instances_train.json, augment: false}",
        "data.val={name: coco, ann_file: annotations/instances_val.json}",
        "evaluator={name: coco}", "train.max_iters=2", "train.batch_size=4", "train.log_period=1",
        "train.progress=false", "train.tensorboard=false", *extra])


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_distiller_maps_teacher_classes_to_student_channels_by_name():
    torch.manual_seed(0)
    student = _tiny(["a", "b", "c"])
    ta, tb = _tiny(["x", "c"]), _tiny(["a"])
    teachers = [Teacher("ta", "ta.pt", ta, TeacherConfig(hm_weight=1.0), ["c"]),
                Teacher("tb", "tb.pt", tb, TeacherConfig(hm_weight=1.0), ["a"])]
    attach_distiller(student, teachers)
    assert (teachers[0].teacher_channels, teachers[0].student_channels) == ([1], [2])
    assert (teachers[1].teacher_channels, teachers[1].student_channels) == ([0], [0])
    canvas = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        s_out = student.forward_heads(canvas)
        losses = student.distiller(canvas, s_out)
    assert sorted(losses) == sorted(f"loss_kd_{k}_{t}" for k in ("heatmap", "wh", "offset")
                                    for t in ("ta", "tb"))
    # independent computation: student channel 2 against teacher A's channel 1
    t_heat = ta.forward_heads(canvas)["heat"][:, 1:2]
    expected = ((s_out["heat"][:, 2:3] - t_heat) ** 2).mean().detach()
    assert float(losses["loss_kd_heatmap_ta"].detach()) == pytest.approx(float(expected), rel=1e-5)
    # the size term uses teacher A's peaks over its taught class only (channel 1, not "x")
    w = peak_weight_map(t_heat)
    t_wh = ta.forward_heads(canvas)["wh"]
    exp_wh = ((s_out["wh"] - t_wh).abs() * w).sum() / (w.sum() + 1e-4) * 10.0
    exp_wh = exp_wh.detach()
    assert float(losses["loss_kd_wh_ta"].detach()) == pytest.approx(float(exp_wh), rel=1e-4)
    assert float(kd_heatmap_loss(s_out["heat"][:, :1], tb.forward_heads(canvas)["heat"]).detach()) == \
        pytest.approx(float(losses["loss_kd_heatmap_tb"].detach()), rel=1e-5)


def test_teachers_are_not_part_of_the_student_state_or_optimiser():
    student, teacher = _tiny(["a"]), _tiny(["a"])
    n_params, keys = len(list(student.parameters())), set(student.state_dict())
    attach_distiller(student, [Teacher("t0", "t.pt", teacher, TeacherConfig(), ["a"])])
    assert len(list(student.parameters())) == n_params and set(student.state_dict()) == keys
    import copy
    assert copy.deepcopy(student).distiller is student.distiller  # EMA copies share teachers


def test_teacher_on_another_grid_is_refused_by_name():
    student = _tiny(["a"])
    cfg = CenterNetConfig(num_classes=1, class_names=["a"], input_size=128,
                          neck_channels=[16, 16, 16], head_conv=8)
    big = build_centernet(cfg).eval()
    with pytest.raises(DistillationError, match=r"teacher 'big'.*128 px.*model.input_size=128"):
        attach_distiller(student, [Teacher("big", "big.pt", big, TeacherConfig(), ["a"])])


def test_teacher_with_other_input_size_but_same_grid_gets_resized_images():
    student = _tiny(["a"])  # 64 px, stride 4 -> 16x16
    cfg = CenterNetConfig(num_classes=1, class_names=["a"], input_size=128, output_stride=32,
                          neck_channels=[16, 16], head_conv=8)  # 128 px, stride 8 -> 16x16
    teacher = build_centernet(cfg).eval()
    d = attach_distiller(student, [Teacher("t", "t.pt", teacher, TeacherConfig(), ["a"])])
    canvas = torch.rand(1, 3, 64, 64) * 255
    losses = d(canvas, student.forward_heads(canvas))
    assert all(torch.isfinite(v) for v in losses.values())


def test_self_distillation_with_labels_trains_and_logs_kd_terms(teacher_run):
    """Teacher = the same (tiny) architecture: self-distillation, KD terms added to GT terms."""
    root, data, teacher = teacher_run
    cfg = _student_cfg(root, data, "kd", [f"distill.teachers=[{{checkpoint: {teacher}}}]"])
    cfg, model, *_ = prepare(cfg)
    assert isinstance(model.distiller, Distiller)
    from percepta.engine.launch import train
    train(cfg)
    logged = _jsonl(root / "runs" / "kd" / "metrics.jsonl")
    train_rows = [r for r in logged if "loss_kd_heatmap_t0" in r]
    assert train_rows and all("loss_heatmap" in r for r in train_rows)
    # the student checkpoint is a plain student (no teacher weights inside)
    ckpt = torch.load(root / "runs" / "kd" / "checkpoints" / "last.pt", weights_only=True)
    assert not any("teacher" in k for k in ckpt["model"])


def test_label_free_distillation_from_an_image_folder(teacher_run):
    root, data, teacher = teacher_run
    folder = data / "train"
    cfg = _student_cfg(root, data, "kd_nolabel", [
        f"distill.teachers=[{{checkpoint: {teacher}}}]", "distill.without_labels=true",
        f"data.train={{name: image_folder, path: {folder}}}", "train.loss_balance.enabled=true"])
    from percepta.engine.launch import train
    train(cfg)
    rows = [r for r in _jsonl(root / "runs" / "kd_nolabel" / "metrics.jsonl") if "total_loss" in r]
    assert rows and all("loss_heatmap" not in r for r in rows)
    # balanced: the optimised total equals the sum of targets (1.5 + 0.3 + 0.1), raw terms logged
    assert rows[-1]["optimized_loss"] == pytest.approx(1.9, rel=1e-4)
    assert rows[-1]["total_loss"] != pytest.approx(1.9, rel=1e-3)


def test_unlabelled_data_without_the_flag_is_refused(teacher_run):
    root, data, teacher = teacher_run
    cfg = _student_cfg(root, data, "x", [f"distill.teachers=[{{checkpoint: {teacher}}}]",
                                         f"data.train={{name: image_folder, path: {data / 'train'}}}"])
    with pytest.raises(PerceptaError, match="without_labels"):
        prepare(cfg)


def test_teacher_class_missing_from_student_is_refused_naming_teacher_and_class(teacher_run):
    root, data, teacher = teacher_run
    ann = _subset_json(data / "annotations" / "instances_train.json",
                       root / "circles_train.json", ["circle"])
    val = _subset_json(data / "annotations" / "instances_val.json", root / "circles_val.json",
                       ["circle"])
    cfg = _student_cfg(root, data, "x", [
        f"distill.teachers=[{{checkpoint: {teacher}, name: full}}]",
        f"data.train={{name: coco, ann_file: {ann}, image_dir: {data / 'train'}, augment: false}}",
        f"data.val={{name: coco, ann_file: {val}, image_dir: {data / 'val'}}}"])
    with pytest.raises(DistillationError, match=r"teacher 'full'.*class 'square' is not a student class"):
        prepare(cfg)


def test_two_teachers_claiming_one_class_are_refused(teacher_run):
    _, _, teacher = teacher_run
    cfg = DistillConfig(teachers=[TeacherConfig(checkpoint=str(teacher), name="a", classes=["star"]),
                                  TeacherConfig(checkpoint=str(teacher), name="b",
                                                classes=["circle", "star"])])
    with pytest.raises(DistillationError, match=r"class 'star' is claimed by two teachers: teacher 'a'.*teacher 'b'"):
        load_teachers(cfg)


def test_teacher_classes_must_exist_in_the_teacher(teacher_run):
    _, _, teacher = teacher_run
    cfg = DistillConfig(teachers=[TeacherConfig(checkpoint=str(teacher), classes=["hexagon"])])
    with pytest.raises(DistillationError, match=r"teacher 't0'.*\['hexagon'\]"):
        load_teachers(cfg)


def test_non_detector_teacher_checkpoint_is_refused(teacher_run, tmp_path):
    _, _, teacher = teacher_run
    ckpt = torch.load(teacher, weights_only=True)
    ckpt["task"] = "quality"
    bad = tmp_path / "iqa.pt"
    torch.save(ckpt, bad)
    with pytest.raises(DistillationError, match=r"teacher 'iqa'.*quality"):
        load_teachers(DistillConfig(teachers=[TeacherConfig(checkpoint=str(bad), name="iqa")]))
    with pytest.raises(DistillationError, match=r"teacher 'gone'.*not found"):
        load_teachers(DistillConfig(teachers=[TeacherConfig(checkpoint=str(tmp_path / "no.pt"),
                                                            name="gone")]))


def test_empty_unlabelled_folder_is_refused(teacher_run, tmp_path):
    root, data, teacher = teacher_run
    (tmp_path / "empty").mkdir()
    cfg = _student_cfg(root, data, "x", [
        f"distill.teachers=[{{checkpoint: {teacher}}}]", "distill.without_labels=true",
        f"data.train={{name: image_folder, path: {tmp_path / 'empty'}}}"])
    with pytest.raises(PerceptaError, match=r"empty.*holds no images"):
        prepare(cfg)


def test_model_classes_that_differ_from_the_validation_classes_are_refused(teacher_run):
    """Labels index data.val's classes: a reordered model.class_names would score silently wrong."""
    root, data, _ = teacher_run
    cfg = _student_cfg(root, data, "x", [f"model.class_names={list(reversed(NAMES))}",
                                         "data.train=null"])
    with pytest.raises(PerceptaError, match=r"differ from data.val's classes"):
        prepare(cfg)
