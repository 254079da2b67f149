"""Knowledge distillation of a CenterNet student from one or several CenterNet teachers (centerX).

:func:`load_teachers` reads the ``model.distill.teachers`` checkpoints (frozen, eval mode) and
:func:`attach_distiller` maps every teacher's classes to the student's classes **by name** and
attaches a :class:`Distiller` to the student, whose training forward then adds, per teacher
``t`` (losses in :mod:`percepta.losses.distill`):

* ``loss_kd_heatmap_<t>``: MSE between the student's channels of ``t``'s classes and ``t``'s
  probabilities for them (``hm_weight`` x);
* ``loss_kd_wh_<t>`` / ``loss_kd_offset_<t>``: size / offset L1 of the student's class-agnostic
  maps against ``t``'s, weighted by ``t``'s peak map over its taught classes (``wh_weight`` x,
  ``off_weight`` x).

Each teacher supervises only its own class channels and adds its own size/offset term, so two
single-class detectors trained on differently labelled datasets teach one student both classes
(multi-teacher distillation, notes/detection.md §2.4). Unlike centerX (cumulative channel
indices, ``KD_CLS_INDEX``) the mapping is by class name, so teacher order and the student's class
order do not matter.

Preprocessing: every model normalises its raw 0-255 input itself, so teachers with other
normalisation statistics are handled. A teacher with another ``input_size`` gets the student's
letterboxed canvas resized to its own input size, which is only consistent when its output grid
then equals the student's (same ``input_size / stride``); otherwise it is refused at start-up.
Teachers run under ``torch.no_grad()`` in eval mode (BN statistics frozen) on the same batch,
inside the trainer's autocast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from percepta.errors import PerceptaError
from percepta.losses.distill import (
    DistillConfig,
    TeacherConfig,
    kd_heatmap_loss,
    kd_regression_loss,
    peak_weight_map,
)

__all__ = [
    "DistillationError",
    "Teacher",
    "Distiller",
    "load_teachers",
    "attach_distiller",
    "student_class_names",
    "describe",
]


class DistillationError(PerceptaError):
    """A teacher that cannot teach this student; the message names the teacher and the class."""


@dataclass
class Teacher:
    """A loaded, frozen teacher and what it teaches."""

    name: str
    source: str
    model: nn.Module
    options: TeacherConfig
    classes: list[str]  # the teacher classes it teaches (in teacher channel order)
    teacher_channels: list[int] | None = None  # filled by attach_distiller
    student_channels: list[int] | None = None

    @property
    def label(self) -> str:
        return f"teacher {self.name!r} ({self.source})"


def _load_teacher(i: int, opts: TeacherConfig) -> Teacher:
    from percepta.checkpoints import (
        CheckpointError,
        check_task,
        load_checkpoint,
        model_from_checkpoint,
    )
    from percepta.detection.centernet import CenterNet

    name = opts.name or f"t{i}"
    path = str(opts.checkpoint)
    label = f"teacher {name!r} ({path or 'no checkpoint'})"
    if not path:
        raise DistillationError(f"model.distill.teachers[{i}].checkpoint is not set ({label})")
    try:
        ckpt = load_checkpoint(path)
        check_task(ckpt, "detection", path)
        model = model_from_checkpoint(ckpt, path)
    except CheckpointError as e:
        raise DistillationError(f"{label}: {e}") from None
    if not isinstance(model, CenterNet):
        raise DistillationError(
            f"{label}: is a {type(model).__name__}, not a CenterNet detector; "
            "distillation needs CenterNet teachers"
        )
    if model.cat_spec_wh:
        raise DistillationError(
            f"{label}: class-specific size heads (cat_spec_wh) cannot teach "
            "the student's shared size head"
        )
    names = list(model.class_names) or [str(c) for c in range(model.num_classes)]
    classes = list(opts.classes) or names
    unknown = [c for c in classes if c not in names]
    if unknown:
        raise DistillationError(
            f"{label}: model.distill.teachers[{i}].classes names {unknown}, which "
            f"the teacher does not detect (its classes: {names})"
        )
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return Teacher(name=name, source=path, model=model, options=opts, classes=classes)


def load_teachers(cfg: DistillConfig) -> list[Teacher]:
    """Load and freeze every configured teacher; refuse duplicates of names or classes."""
    teachers = [_load_teacher(i, t) for i, t in enumerate(cfg.teachers)]
    seen_names: dict[str, Teacher] = {}
    owner: dict[str, Teacher] = {}
    for t in teachers:
        if t.name in seen_names:
            raise DistillationError(
                f"two teachers are named {t.name!r} ({seen_names[t.name].source} "
                f"and {t.source}); give them distinct model.distill.teachers[].name"
            )
        seen_names[t.name] = t
        for c in t.classes:
            if c in owner:
                raise DistillationError(
                    f"class {c!r} is claimed by two teachers: {owner[c].label} and {t.label}; "
                    "restrict one of them with model.distill.teachers[].classes"
                )
            owner[c] = t
    return teachers


def teacher_class_names(cfg: DistillConfig) -> list[str]:
    """The classes the configured teachers teach, read from their checkpoints' configs
    (without building them): the classes of a label-free student with no class names."""
    from percepta.checkpoints import CheckpointError, load_checkpoint

    names: list[str] = []
    for i, t in enumerate(cfg.teachers):
        label = f"teacher {t.name or f't{i}'!r} ({t.checkpoint or 'no checkpoint'})"
        if not t.checkpoint:
            raise DistillationError(f"model.distill.teachers[{i}].checkpoint is not set ({label})")
        try:
            model_cfg = load_checkpoint(t.checkpoint)["config"].get("model", {})
        except CheckpointError as e:
            raise DistillationError(f"{label}: {e}") from None
        own = list(model_cfg.get("class_names") or [])
        names.extend(list(t.classes) or own)
    return names


def student_class_names(teachers: Sequence[Teacher]) -> list[str]:
    """The union of the teachers' taught classes, in teacher order (label-free students)."""
    return [c for t in teachers for c in t.classes]


class Distiller:
    """Computes the KD loss terms of a student batch; attached to the student, not a submodule.

    Teachers are deliberately not registered as submodules of the student: they must not appear
    in its ``state_dict`` (checkpoints stay plain student checkpoints), in ``parameters()`` (the
    optimiser) or be copied by the EMA (``copy.deepcopy`` of a Distiller returns itself).
    """

    def __init__(self, teachers: Sequence[Teacher], without_labels: bool = False) -> None:
        self.teachers = list(teachers)
        self.without_labels = bool(without_labels)

    def __deepcopy__(self, memo: dict) -> Distiller:
        return self

    def _teacher_heads(
        self, t: Teacher, canvas: torch.Tensor, grid: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        model = t.model
        if model.pixel_mean.device != canvas.device:
            model.to(canvas.device)
        x = canvas
        if x.shape[-1] != model.input_size or x.shape[-2] != model.input_size:
            x = F.interpolate(
                x.float(),
                size=(model.input_size, model.input_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        with torch.no_grad():
            out = model.forward_heads(x)
        if tuple(out["heat"].shape[-2:]) != grid:
            raise DistillationError(
                f"{t.label}: its output map is {tuple(out['heat'].shape[-2:])} "
                f"but the student's is {grid}"
            )
        return out

    def __call__(
        self, canvas: torch.Tensor, student_out: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """KD terms for a letterboxed raw batch and the student's head outputs."""
        grid = tuple(student_out["heat"].shape[-2:])
        losses: dict[str, torch.Tensor] = {}
        for t in self.teachers:
            out = self._teacher_heads(t, canvas, grid)
            t_heat = out["heat"].float()[:, t.teacher_channels]
            s_heat = student_out["heat"].float()[:, t.student_channels]
            weights = peak_weight_map(t_heat)
            o = t.options
            losses[f"loss_kd_heatmap_{t.name}"] = o.hm_weight * kd_heatmap_loss(s_heat, t_heat)
            losses[f"loss_kd_wh_{t.name}"] = o.wh_weight * kd_regression_loss(
                student_out["wh"], out["wh"], weights, norm_wh=o.norm_wh
            )
            losses[f"loss_kd_offset_{t.name}"] = o.off_weight * kd_regression_loss(
                student_out["reg"], out["reg"], weights
            )
        return losses


def attach_distiller(
    student: nn.Module, teachers: Sequence[Teacher], without_labels: bool = False
) -> Distiller:
    """Map each teacher's classes to ``student``'s by name, check the grids, attach; returns it."""
    from percepta.detection.centernet import CenterNet

    if not isinstance(student, CenterNet):
        raise DistillationError(
            f"distillation needs a CenterNet student, got {type(student).__name__}"
        )
    if student.cat_spec_wh:
        raise DistillationError(
            "a student with class-specific size heads (cat_spec_wh) cannot "
            "be distilled (the teachers' size maps are class-agnostic)"
        )
    names = list(student.class_names)
    s_grid = student.input_size // student.stride
    for t in teachers:
        missing = [c for c in t.classes if c not in names]
        if missing:
            raise DistillationError(
                f"{t.label}: class {missing[0]!r} is not a student class (student classes: "
                f"{names}); add it to model.class_names or restrict model.distill.teachers[].classes"
            )
        t_names = list(t.model.class_names) or [str(c) for c in range(t.model.num_classes)]
        t.teacher_channels = [t_names.index(c) for c in t.classes]
        t.student_channels = [names.index(c) for c in t.classes]
        t_grid = t.model.input_size // t.model.stride
        if t_grid != s_grid:
            raise DistillationError(
                f"{t.label}: expects {t.model.input_size} px input with stride {t.model.stride} "
                f"({t_grid}x{t_grid} output) but the student uses {student.input_size} px with "
                f"stride {student.stride} ({s_grid}x{s_grid}); train the student at the "
                f"teacher's input size (model.input_size={t.model.input_size}) or use a teacher "
                "with the same output grid"
            )
    distiller = Distiller(teachers, without_labels)
    student.distiller = distiller
    return distiller


def describe(teachers: Sequence[Teacher]) -> str:
    """One line per teacher for the console: which classes it teaches."""
    return "\n".join(f"[percepta] distill: {t.label} teaches {t.classes}" for t in teachers)
