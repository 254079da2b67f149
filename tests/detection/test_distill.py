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
from percepta.losses.distill import DistillConfig, TeacherConfig

TINY = "{name: centernet, backbone: resnet18, input_size: 64, neck_channels: [16, 16, 16], head_conv: 8}"
NAMES = ["circle", "square", "triangle", "star", "arrow", "cross"]


def _tiny(names, **kw) -> torch.nn.Module:
    cfg = CenterNetConfig(
        num_classes=len(names),
        class_names=list(names),
        input_size=64,
        neck_channels=[16, 16, 16],
        head_conv=8,
        **kw,
    )
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
output_dir: {root / "runs"}
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
    return config.load(
        None,
        [
            f"name={name}",
            f"output_dir={root / 'runs'}",
            f"model={TINY}",
            f"data.root={data}",
            "data.train={name: coco, ann_file: annotations/instances_train.json, augment: false}",
            "data.val={name: coco, ann_file: annotations/instances_val.json}",
            "evaluator={name: coco}",
            "train.max_iters=2",
            "train.batch_size=4",
            "train.log_period=1",
            "train.progress=false",
            "train.tensorboard=false",
            *extra,
        ],
    )


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _peaks_by_loop(heat: torch.Tensor) -> torch.Tensor:
    """``[B,C,H,W]`` -> ``[B,1,H,W]``: a pixel keeps its value iff it equals the max of its 3x3
    neighbourhood (inside the map), then the max over channels; plain Python loops."""
    b, c, h, w = heat.shape
    out = torch.zeros(b, 1, h, w)
    for i in range(b):
        for y in range(h):
            for x in range(w):
                best = 0.0
                for k in range(c):
                    v = float(heat[i, k, y, x])
                    win = heat[i, k, max(0, y - 1) : y + 2, max(0, x - 1) : x + 2]
                    if v == float(win.max()):
                        best = max(best, v)
                out[i, 0, y, x] = best
    return out


def test_distiller_maps_teacher_classes_to_student_channels_by_name():
    torch.manual_seed(0)
    student = _tiny(["a", "b", "c"])
    ta, tb = _tiny(["x", "c"]), _tiny(["a"])
    teachers = [
        Teacher("ta", "ta.pt", ta, TeacherConfig(hm_weight=1.0), ["c"]),
        Teacher("tb", "tb.pt", tb, TeacherConfig(hm_weight=1.0), ["a"]),
    ]
    attach_distiller(student, teachers)
    assert (teachers[0].teacher_channels, teachers[0].student_channels) == ([1], [2])
    assert (teachers[1].teacher_channels, teachers[1].student_channels) == ([0], [0])
    canvas = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        s_out = student.forward_heads(canvas)
        losses = student.distiller(canvas, s_out)
    assert sorted(losses) == sorted(
        f"loss_kd_{k}_{t}" for k in ("heatmap", "wh", "offset") for t in ("ta", "tb")
    )
    # independent computation: student channel 2 against teacher A's channel 1
    t_heat = ta.forward_heads(canvas)["heat"][:, 1:2]
    expected = ((s_out["heat"][:, 2:3] - t_heat) ** 2).mean().detach()
    assert float(losses["loss_kd_heatmap_ta"].detach()) == pytest.approx(float(expected), rel=1e-5)
    # the size term uses teacher A's peaks over its taught class only (channel 1, not "x");
    # peaks recomputed here by an explicit 3x3 neighbourhood loop (not peak_weight_map)
    w = _peaks_by_loop(t_heat.detach())
    t_wh = ta.forward_heads(canvas)["wh"]
    exp_wh = ((s_out["wh"] - t_wh).abs() * w).sum() / (w.sum() + 1e-4) * 10.0
    exp_wh = exp_wh.detach()
    assert float(losses["loss_kd_wh_ta"].detach()) == pytest.approx(float(exp_wh), rel=1e-4)
    # teacher B (class "a" = its channel 0) against student channel 0, by the plain formula
    tb_heat = tb.forward_heads(canvas)["heat"]
    exp_tb = ((s_out["heat"][:, 0:1] - tb_heat) ** 2).mean().detach()
    assert float(losses["loss_kd_heatmap_tb"].detach()) == pytest.approx(float(exp_tb), rel=1e-5)


class _FixedHeads(torch.nn.Module):
    """A teacher whose head outputs are hand-made tensors (only what the Distiller reads)."""

    def __init__(self, heads: dict[str, torch.Tensor], input_size: int = 12) -> None:
        super().__init__()
        self.heads = heads
        self.input_size = input_size
        self.register_buffer("pixel_mean", torch.zeros(3))

    def forward_heads(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.heads


def _hand_case() -> tuple[dict, dict]:
    """Teacher / student head maps on a 3x3 grid, chosen so every loss is a short sum.

    Teacher channel 1 (the taught class "b") has peaks (a pixel equal to its 3x3 max): a tie
    0.6 / 0.6 at (0,0) and (0,1), 0.5 at (2,2), and 0 at (2,0) (a flat zero window). Its other
    pixels are 0 next to a 0.6 or 0.5: no peak. Channel 0 ("x", not taught) has a strong peak
    that must be ignored. Peak weights m: 0.6, 0.6, 0.5 -> sum m = 1.7.
    """
    t_heat = torch.zeros(1, 2, 3, 3)
    t_heat[0, 0, 1, 1] = 0.9  # untaught class: must not create a weight
    t_heat[0, 1] = torch.tensor([[0.6, 0.6, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.5]])
    t_wh = torch.zeros(1, 2, 3, 3)
    t_wh[0, 0], t_wh[0, 1] = 4.0, 2.0  # teacher mean side 3 everywhere
    t_reg = torch.full((1, 2, 3, 3), 0.5)
    s_heat = torch.zeros(1, 3, 3, 3)
    s_heat[0, 2] = t_heat[0, 1]
    s_heat[0, 2, 0, 0] = 0.4  # diff 0.2
    s_heat[0, 2, 1, 1] = 0.3  # diff 0.3 (weight 0 there, but the MSE counts every pixel)
    s_heat[0, 0] = 0.77  # other student channels are not supervised by this teacher
    s_wh = t_wh.clone()
    s_wh[0, :, 0, 0] = torch.tensor([5.0, 2.0])  # |diff| 1 + 0 at weight 0.6
    s_wh[0, :, 0, 1] = torch.tensor([4.0, 4.0])  # |diff| 0 + 2 at weight 0.6
    s_wh[0, :, 2, 2] = torch.tensor([3.0, 3.0])  # |diff| 1 + 1 at weight 0.5
    s_wh[0, :, 1, 1] = 50.0  # weight 0 (only the untaught class peaks here): ignored
    s_reg = t_reg.clone()
    s_reg[0, :, 2, 2] = torch.tensor([0.1, 0.9])  # |diff| 0.4 + 0.4 at weight 0.5
    s_reg[0, :, 1, 2] = 0.0  # weight 0: ignored
    return ({"heat": t_heat, "wh": t_wh, "reg": t_reg}, {"heat": s_heat, "wh": s_wh, "reg": s_reg})


@pytest.mark.parametrize("norm_wh", [False, True])
def test_distiller_losses_by_hand(norm_wh: bool):
    t_out, s_out = _hand_case()
    opts = TeacherConfig(hm_weight=10.0, wh_weight=10.0, off_weight=1.0, norm_wh=norm_wh)
    teacher = Teacher(
        "t", "t.pt", _FixedHeads(t_out), opts, ["b"], teacher_channels=[1], student_channels=[2]
    )
    losses = Distiller([teacher])(torch.zeros(1, 3, 12, 12), s_out)
    # MSE over the 9 pixels of the one supervised channel: (0.2^2 + 0.3^2) / 9
    assert float(losses["loss_kd_heatmap_t"]) == pytest.approx(10 * (0.04 + 0.09) / 9, rel=1e-6)
    # sum m |s - t| / (sum m + 1e-4) = (0.6*1 + 0.6*2 + 0.5*2) / 1.7001; with norm_wh each
    # |s - t| is divided by the teacher's mean side + 1e-4 = 3.0001
    wh = (0.6 * 1 + 0.6 * 2 + 0.5 * 2) / (1.7 + 1e-4)
    if norm_wh:
        wh /= 3.0 + 1e-4
    assert float(losses["loss_kd_wh_t"]) == pytest.approx(10 * wh, rel=1e-6)
    # the offset term is never normalised: 0.5 * (0.4 + 0.4) / 1.7001
    assert float(losses["loss_kd_offset_t"]) == pytest.approx(0.5 * 0.8 / (1.7 + 1e-4), rel=1e-6)


def test_teachers_are_not_part_of_the_student_state_or_optimiser():
    student, teacher = _tiny(["a"]), _tiny(["a"])
    n_params, keys = len(list(student.parameters())), set(student.state_dict())
    attach_distiller(student, [Teacher("t0", "t.pt", teacher, TeacherConfig(), ["a"])])
    assert len(list(student.parameters())) == n_params and set(student.state_dict()) == keys
    import copy

    assert copy.deepcopy(student).distiller is student.distiller  # EMA copies share teachers


def test_teacher_on_another_grid_is_refused_by_name():
    student = _tiny(["a"])
    cfg = CenterNetConfig(
        num_classes=1, class_names=["a"], input_size=128, neck_channels=[16, 16, 16], head_conv=8
    )
    big = build_centernet(cfg).eval()
    with pytest.raises(DistillationError, match=r"teacher 'big'.*128 px.*model.input_size=128"):
        attach_distiller(student, [Teacher("big", "big.pt", big, TeacherConfig(), ["a"])])


def test_teacher_with_other_input_size_but_same_grid_gets_resized_images():
    student = _tiny(["a"])  # 64 px, stride 4 -> 16x16
    cfg = CenterNetConfig(
        num_classes=1,
        class_names=["a"],
        input_size=128,
        output_stride=32,
        neck_channels=[16, 16],
        head_conv=8,
    )  # 128 px, stride 8 -> 16x16
    teacher = build_centernet(cfg).eval()
    d = attach_distiller(student, [Teacher("t", "t.pt", teacher, TeacherConfig(), ["a"])])
    canvas = torch.rand(1, 3, 64, 64) * 255
    losses = d(canvas, student.forward_heads(canvas))
    assert all(torch.isfinite(v) for v in losses.values())


def test_self_distillation_with_labels_trains_and_logs_kd_terms(teacher_run):
    """Teacher = the same (tiny) architecture: self-distillation, KD terms added to GT terms."""
    root, data, teacher = teacher_run
    cfg = _student_cfg(root, data, "kd", [f"model.distill.teachers=[{{checkpoint: {teacher}}}]"])
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
    cfg = _student_cfg(
        root,
        data,
        "kd_nolabel",
        [
            f"model.distill.teachers=[{{checkpoint: {teacher}}}]",
            "model.distill.without_labels=true",
            f"data.train={{name: image_folder, path: {folder}}}",
            "train.loss_balance.enabled=true",
        ],
    )
    from percepta.engine.launch import train

    train(cfg)
    rows = [r for r in _jsonl(root / "runs" / "kd_nolabel" / "metrics.jsonl") if "total_loss" in r]
    assert rows and all("loss_heatmap" not in r for r in rows)
    # balanced: the optimised total equals the sum of targets (1.5 + 0.3 + 0.1), raw terms logged
    assert rows[-1]["optimized_loss"] == pytest.approx(1.9, rel=1e-4)
    assert rows[-1]["total_loss"] != pytest.approx(1.9, rel=1e-3)


def test_unlabelled_data_without_the_flag_is_refused(teacher_run):
    root, data, teacher = teacher_run
    cfg = _student_cfg(
        root,
        data,
        "x",
        [
            f"model.distill.teachers=[{{checkpoint: {teacher}}}]",
            f"data.train={{name: image_folder, path: {data / 'train'}}}",
        ],
    )
    with pytest.raises(PerceptaError, match="without_labels"):
        prepare(cfg)


def test_teacher_class_missing_from_student_is_refused_naming_teacher_and_class(teacher_run):
    root, data, teacher = teacher_run
    ann = _subset_json(
        data / "annotations" / "instances_train.json", root / "circles_train.json", ["circle"]
    )
    val = _subset_json(
        data / "annotations" / "instances_val.json", root / "circles_val.json", ["circle"]
    )
    cfg = _student_cfg(
        root,
        data,
        "x",
        [
            f"model.distill.teachers=[{{checkpoint: {teacher}, name: full}}]",
            f"data.train={{name: coco, ann_file: {ann}, image_dir: {data / 'train'}, augment: false}}",
            f"data.val={{name: coco, ann_file: {val}, image_dir: {data / 'val'}}}",
        ],
    )
    with pytest.raises(
        DistillationError, match=r"teacher 'full'.*class 'square' is not a student class"
    ):
        prepare(cfg)


def test_two_teachers_claiming_one_class_are_refused(teacher_run):
    _, _, teacher = teacher_run
    cfg = DistillConfig(
        teachers=[
            TeacherConfig(checkpoint=str(teacher), name="a", classes=["star"]),
            TeacherConfig(checkpoint=str(teacher), name="b", classes=["circle", "star"]),
        ]
    )
    with pytest.raises(
        DistillationError,
        match=r"class 'star' is claimed by two teachers: teacher 'a'.*teacher 'b'",
    ):
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
        load_teachers(
            DistillConfig(teachers=[TeacherConfig(checkpoint=str(tmp_path / "no.pt"), name="gone")])
        )


def test_empty_unlabelled_folder_is_refused(teacher_run, tmp_path):
    root, data, teacher = teacher_run
    (tmp_path / "empty").mkdir()
    cfg = _student_cfg(
        root,
        data,
        "x",
        [
            f"model.distill.teachers=[{{checkpoint: {teacher}}}]",
            "model.distill.without_labels=true",
            f"data.train={{name: image_folder, path: {tmp_path / 'empty'}}}",
        ],
    )
    with pytest.raises(PerceptaError, match=r"empty.*holds no images"):
        prepare(cfg)


def test_model_classes_that_differ_from_the_validation_classes_are_refused(teacher_run):
    """Labels index data.val's classes: a reordered model.class_names would score silently wrong."""
    root, data, _ = teacher_run
    cfg = _student_cfg(
        root, data, "x", [f"model.class_names={list(reversed(NAMES))}", "data.train=null"]
    )
    with pytest.raises(PerceptaError, match=r"differ from data.val's classes"):
        prepare(cfg)
