"""Config precedence (defaults < yaml < command line), base inheritance and clear errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from percepta import config as C
from percepta.registry import MODELS, import_all


@dataclass
class ToyModelConfig:
    name: str = "toy_config_model"
    width: int = 8
    backbone: str = "tiny"
    dims: list[int] = field(default_factory=lambda: [1, 2])


@pytest.fixture(autouse=True)
def _toy_model():
    """Registered for this module's tests only (the model-contract test checks every model)."""
    import_all()
    MODELS.add("toy_config_model", _build_toy, options=ToyModelConfig, help="test model")
    yield
    MODELS.remove("toy_config_model")


def _build_toy(cfg):
    return cfg


TOY = ["model.name=toy_config_model"]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_precedence_defaults_yaml_cli(tmp_path):
    y = write(
        tmp_path / "a.yaml",
        "model: {name: toy_config_model, width: 16}\ntrain:\n  max_iters: 50\n  batch_size: 4\n",
    )
    cfg = C.load(y, ["train.max_iters=70"])
    assert cfg.train.max_iters == 70  # command line beats yaml
    assert cfg.train.batch_size == 4  # yaml beats defaults
    assert cfg.train.log_period == 20  # untouched default
    assert cfg.model.width == 16 and cfg.model.backbone == "tiny"
    assert OmegaConf.is_readonly(cfg)


def test_base_inheritance_child_wins(tmp_path):
    write(
        tmp_path / "base.yaml",
        "model: {name: toy_config_model, width: 3}\nseed: 5\ntrain: {max_iters: 10}\n",
    )
    sub = tmp_path / "sub"
    sub.mkdir()
    child = write(sub / "child.yaml", "base: ../base.yaml\ntrain: {max_iters: 20}\n")
    cfg = C.load(child)
    assert (cfg.seed, cfg.train.max_iters, cfg.model.width) == (5, 20, 3)


def test_base_cycle_and_missing_base(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(C.ConfigError, match="cycle"):
        C.load(tmp_path / "a.yaml")
    write(tmp_path / "c.yaml", "base: nowhere.yaml\n")
    with pytest.raises(C.ConfigError, match="nowhere.yaml"):
        C.load(tmp_path / "c.yaml")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(C.ConfigError, match="not found"):
        C.load(tmp_path / "missing.yaml")
    bad = write(tmp_path / "bad.yaml", "train: [unclosed\n")
    with pytest.raises(C.ConfigError, match="bad.yaml"):
        C.load(bad)


def test_unknown_key_suggests_nearest(tmp_path):
    with pytest.raises(C.ConfigError) as e:
        C.load(None, TOY + ["train.max_iter=3"])
    msg = str(e.value)
    assert "train.max_iter" in msg and "max_iters" in msg and "command line" in msg
    y = write(tmp_path / "y.yaml", "model: {name: toy_config_model, widht: 3}\n")
    with pytest.raises(C.ConfigError) as e:
        C.load(y)
    assert "model.widht" in str(e.value) and "'width'" in str(e.value) and "y.yaml" in str(e.value)


def test_wrong_type_names_key():
    with pytest.raises(C.ConfigError, match="train.max_iters"):
        C.load(None, TOY + ["train.max_iters=lots"])
    with pytest.raises(C.ConfigError, match="model.width"):
        C.load(None, TOY + ["model.width=[1,2]"])


def test_unknown_component_name_suggests():
    with pytest.raises(C.ConfigError) as e:
        C.load(None, ["model.name=toy_config_modle"])
    assert "toy_config_model" in str(e.value)


def test_malformed_override():
    with pytest.raises(C.ConfigError, match="key=value"):
        C.load(None, TOY + ["train.max_iters"])


def test_roundtrip_through_plain_dict(tmp_path):
    cfg = C.load(None, TOY + ["model.dims=[4,5,6]", "name=abc"])
    d = C.to_dict(cfg)
    assert isinstance(d, dict) and d["model"]["dims"] == [4, 5, 6]
    again = C.from_dict(d)
    assert again == cfg
    C.save(cfg, tmp_path / "run" / "config.yaml")
    assert C.load(tmp_path / "run" / "config.yaml") == cfg
    obj = C.section_object(cfg.model)
    assert isinstance(obj, ToyModelConfig) and obj.dims == [4, 5, 6]


def test_no_code_execution(tmp_path):
    y = write(tmp_path / "evil.yaml", "name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(C.ConfigError):
        C.load(y)


def test_switching_a_sections_component_replaces_it(tmp_path):
    """data.train: coco -> image_folder in a child yaml or on the command line replaces the
    section (the coco options would be unknown keys of image_folder); same name still merges."""
    base = write(
        tmp_path / "base.yaml", "data: {train: {name: coco, ann_file: a.json, augment: false}}\n"
    )
    child = write(
        tmp_path / "child.yaml",
        "base: base.yaml\ndata: {train: {name: image_folder, path: imgs}}\n",
    )
    cfg = C.load(child)
    assert dict(cfg.data.train) == {"name": "image_folder", "path": "imgs", "max_images": 0}
    cfg = C.load(base, ["data.train={name: image_folder, path: x}"])
    assert cfg.data.train.name == "image_folder" and "ann_file" not in cfg.data.train
    cfg = C.load(base, ["data.train.ann_file=b.json"])
    assert (cfg.data.train.ann_file, cfg.data.train.augment) == ("b.json", False)
    with pytest.raises(C.ConfigError, match="unknown config key 'data.train.ann_file'"):
        C.load(base, ["data.train={name: image_folder, path: x}", "data.train.ann_file=b.json"])


@pytest.mark.parametrize(
    "path",
    sorted(
        str(p.relative_to(Path(__file__).resolve().parents[1]))
        for p in (Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml")
    ),
)
def test_every_shipped_config_loads(path):
    """Every yaml in configs/ validates (keys, types, base chains, switched sections)."""
    repo = Path(__file__).resolve().parents[1]
    cfg = C.load(repo / path)
    assert cfg.name and cfg.task in ("detection", "scene_graph", "quality")
