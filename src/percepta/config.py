"""Configuration: dataclass defaults < yaml (with ``base:`` inheritance) < ``key=value`` overrides.

Everything is merged with OmegaConf structured configs, so unknown keys and wrong types fail
before anything is built, with the full key, where it came from and the nearest valid key.
Sections whose schema depends on a chosen component (``model``, ``data.train``, ``data.val``,
``evaluator``) take their schema from the options dataclass that the component registered
(see :mod:`percepta.registry`), selected by the section's ``name``.

No Python config files and no ``eval``: yaml is parsed with OmegaConf's safe loader.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf import errors as oc_errors

from percepta.engine.options import TrainConfig
from percepta.errors import PerceptaError
from percepta.losses.distill import DistillConfig
from percepta.registry import DATASETS, EVALUATORS, MODELS, Registry, RegistryError, import_all, suggest

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "DataSection",
    "DYNAMIC_SECTIONS",
    "load",
    "from_dict",
    "to_dict",
    "save",
    "section_object",
]


class ConfigError(PerceptaError, ValueError):
    """A configuration problem; the message names the key and the source (file or command line)."""


@dataclass
class DataSection:
    """``data``: a training split and an optional validation split, each a dataset section."""

    root: str = "../shared/data"  # where real datasets live; relative paths resolve from the cwd
    train: Any = None  # e.g. {name: coco, ann_file: ..., image_dir: ...}
    val: Any = None


@dataclass
class ExperimentConfig:
    """The top level of every run's config."""

    name: str = "run"
    task: str = "detection"  # detection | scene_graph | quality
    output_dir: str = "runs"
    seed: int = 0
    resume: bool = False  # continue from <output_dir>/<name>/checkpoints/last.pt
    init_weights: str = ""  # optional checkpoint whose model weights initialise the model
    model: Any = field(default_factory=lambda: {"name": "centernet"})
    data: DataSection = field(default_factory=DataSection)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluator: Any = None
    distill: DistillConfig = field(default_factory=DistillConfig)  # teachers (detection only)


# (dotted path, registry, name used when the section is given without one) for sections whose
# schema is chosen by their ``name`` key.
DYNAMIC_SECTIONS: list[tuple[str, Registry, str]] = [
    ("model", MODELS, "centernet"),
    ("data.train", DATASETS, "coco"),
    ("data.val", DATASETS, "coco"),
    ("evaluator", EVALUATORS, "coco"),
]


def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        node = OmegaConf.load(path)
    except Exception as e:  # yaml.YAMLError and friends
        raise ConfigError(f"cannot parse config file {path}: {e}") from None
    if node is None:
        return OmegaConf.create({})
    if not isinstance(node, DictConfig):
        raise ConfigError(f"config file {path} must contain a mapping at the top level")
    return node


def _read_chain(path: Path, seen: tuple[Path, ...] = ()) -> DictConfig:
    """Read ``path`` and, recursively, the file(s) its ``base:`` key names (child wins)."""
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"config 'base:' files form a cycle: {chain}")
    node = _read_yaml(path)
    base = node.pop("base", None)
    if base is None:
        return node
    bases = [base] if isinstance(base, str) else list(base) if isinstance(base, ListConfig) else None
    if bases is None:
        raise ConfigError(f"{path}: 'base' must be a file name or a list of file names")
    merged = OmegaConf.create({})
    for b in bases:
        candidate = (path.parent / str(b)) if not os.path.isabs(str(b)) else Path(str(b))
        if not candidate.is_file() and Path(str(b)).is_file():
            candidate = Path(str(b))
        if not candidate.is_file():
            raise ConfigError(f"{path}: base config {b!r} not found (looked in {path.parent})")
        merged = _layer(merged, _read_chain(candidate, (*seen, path)))
    return _layer(merged, node)


def _layer(lower: DictConfig, upper: DictConfig) -> DictConfig:
    """Merge ``upper`` over ``lower`` (see :func:`_drop_switched`)."""
    return OmegaConf.merge(_drop_switched(lower, upper), upper)


def _drop_switched(lower: DictConfig, upper: DictConfig) -> DictConfig:
    """``lower`` without the dynamic sections whose ``name`` ``upper`` changes (e.g.
    ``data.train`` from ``coco`` to ``image_folder``): such a section is replaced, not merged,
    since the old component's options mean nothing to the new one."""
    lower = lower.copy()
    for path, _registry, _default in DYNAMIC_SECTIONS:
        if not (_has(lower, path) and _has(upper, path)):
            continue
        old, new = OmegaConf.select(lower, path), OmegaConf.select(upper, path)
        if (isinstance(old, DictConfig) and isinstance(new, DictConfig) and "name" in new
                and "name" in old and str(new.name) != str(old.name)):
            parent, _, leaf = path.rpartition(".")
            holder = OmegaConf.select(lower, parent) if parent else lower
            holder.pop(leaf)
    return lower


def _parse_overrides(overrides: list[str]) -> DictConfig:
    for o in overrides:
        if "=" not in o or o.startswith("="):
            raise ConfigError(f"command-line override {o!r} is not of the form key=value")
    merged = OmegaConf.create({})
    for o in overrides:  # one by one, so a later override may switch a section's component
        try:
            node = OmegaConf.from_dotlist([o])
        except Exception as e:
            raise ConfigError(f"cannot parse command-line override {o!r}: {e}") from None
        merged = _layer(merged, node)
    return merged


def _schema_for(raw: DictConfig) -> DictConfig:
    """The structured schema with each dynamic section typed by its component's options."""
    import_all()
    schema = OmegaConf.structured(ExperimentConfig)
    for path, registry, default_name in DYNAMIC_SECTIONS:
        default = OmegaConf.select(schema, path)
        given = OmegaConf.select(raw, path) if _has(raw, path) else default
        if given is None:
            OmegaConf.update(schema, path, None, force_add=True)
            continue
        if not isinstance(given, (dict, DictConfig)):
            raise ConfigError(f"config section {path!r} must be a mapping with a 'name' key")
        name = given.get("name") or (default or {}).get("name") or default_name
        try:
            options = registry.options(str(name))
        except RegistryError as e:
            raise ConfigError(f"{path}.name: {e}") from None
        if options is None:
            OmegaConf.update(schema, path, {"name": str(name)}, force_add=True)
        else:
            node = OmegaConf.structured(options)
            OmegaConf.update(schema, path, node, force_add=True)
    return schema


def _has(node: DictConfig, path: str) -> bool:
    cur: Any = node
    for part in path.split("."):
        if not isinstance(cur, DictConfig) or part not in cur:
            return False
        cur = cur._get_node(part)
    return True


def _valid_keys(schema: DictConfig, full_key: str) -> list[str]:
    parent = full_key.rsplit(".", 1)[0] if "." in full_key else ""
    node = OmegaConf.select(schema, parent) if parent else schema
    return [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []


def _merge(schema: DictConfig, node: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(schema, node)
    except oc_errors.ConfigKeyError as e:
        key = e.full_key or str(e.key)
        leaf = key.rsplit(".", 1)[-1]
        hint = suggest(leaf, _valid_keys(schema, key))
        raise ConfigError(f"unknown config key {key!r} ({source}).{hint}") from None
    except oc_errors.ValidationError as e:
        key = e.full_key or str(e.key)
        msg = str(e).split("\n")[0]
        raise ConfigError(f"config key {key!r} has a wrong type ({source}): {msg}") from None
    except oc_errors.OmegaConfBaseException as e:
        raise ConfigError(f"invalid config ({source}): {str(e).splitlines()[0]}") from None


def load(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> DictConfig:
    """Load a config: defaults < yaml file (and its ``base:`` chain) < ``key=value`` overrides.

    Returns a read-only, validated ``DictConfig``. Raises :class:`ConfigError` naming the key,
    where it came from and the nearest valid key when something is wrong.
    """
    overrides = list(overrides or [])
    file_node = _read_chain(Path(path)) if path else OmegaConf.create({})
    cli_node = _parse_overrides(overrides)
    file_node = _drop_switched(file_node, cli_node)
    schema = _schema_for(OmegaConf.merge(file_node, cli_node))
    cfg = _merge(schema, file_node, f"in {path}" if path else "defaults")
    cfg = _merge(cfg, cli_node, "on the command line")
    return _finish(cfg)


def _finish(cfg: DictConfig) -> DictConfig:
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
    except Exception:
        missing = []
    if missing:
        raise ConfigError("config keys without a value (set them in the yaml or as key=value): "
                          + ", ".join(missing))
    try:
        OmegaConf.resolve(cfg)
    except oc_errors.OmegaConfBaseException as e:
        raise ConfigError(f"cannot resolve interpolation: {str(e).splitlines()[0]}") from None
    OmegaConf.set_readonly(cfg, True)
    return cfg


def from_dict(data: dict, source: str = "embedded config") -> DictConfig:
    """Re-validate a plain dict (e.g. the config embedded in a checkpoint)."""
    node = OmegaConf.create(data)
    schema = _schema_for(node)
    return _finish(_merge(schema, node, source))


def to_dict(cfg: DictConfig) -> dict:
    """A plain, resolved dict of builtins (safe to store in a ``weights_only`` checkpoint)."""
    return OmegaConf.to_container(cfg, resolve=True, structured_config_mode=None)  # type: ignore[return-value]


def save(cfg: DictConfig, path: str | os.PathLike) -> None:
    """Write the fully resolved config as yaml."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(OmegaConf.to_yaml(cfg, resolve=True))


def section_object(node: DictConfig | None) -> Any:
    """Turn a typed section back into its options dataclass instance (or ``None``)."""
    if node is None:
        return None
    if OmegaConf.get_type(node) in (dict, None):
        return OmegaConf.to_container(node, resolve=True)
    return OmegaConf.to_object(node)
