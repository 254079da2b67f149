"""Configuration: dataclass defaults < yaml (with ``base:`` inheritance) < ``key=value`` overrides.

Everything is merged with OmegaConf structured configs, so unknown keys and wrong types fail
before anything is built, with the full key, where it came from and the nearest valid key.
Sections whose schema depends on a chosen component (``model``, ``data.train``, ``data.val``,
``evaluator``) take their schema from the options dataclass that the component registered
(see :mod:`percepta.registry`), selected by the section's ``name``. Such a section may nest
another component's section: an options field declared with
``field(default=None, metadata={"component": "models"})`` (a key of
:data:`percepta.registry.ALL_REGISTRIES`) is typed by the options of the component its own
``name`` selects, recursively, and validated like a top-level section (for example a relation
model's ``detector:`` section). Plain nested dataclasses (a detector's ``distill.teachers``)
are validated by their own types.

``task`` is a label: left empty it becomes the model's task; set, it must match the model's
(an unknown task or a task/model mismatch is an error). Checkpoints record it and are checked
against it on load.

No Python config files and no ``eval``: yaml is parsed with OmegaConf's safe loader.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf import errors as oc_errors

from percepta.engine.options import TrainConfig
from percepta.errors import ConfigError
from percepta.registry import (
    ALL_REGISTRIES,
    DATASETS,
    EVALUATORS,
    MODELS,
    Registry,
    RegistryError,
    import_all,
    known_tasks,
    suggest,
)

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
    task: str = ""  # "" = the model's task (detection | scene_graph | quality)
    output_dir: str = "runs"
    seed: int = 0
    resume: bool = False  # continue from <output_dir>/<name>/checkpoints/last.pt
    init_weights: str = ""  # optional checkpoint whose model weights initialise the model
    model: Any = field(default_factory=lambda: {"name": "centernet"})
    data: DataSection = field(default_factory=DataSection)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluator: Any = None
    overwrite: bool = False  # allow a fresh run to replace an existing run folder's checkpoints


# (dotted path, registry, name used when the section is given without one) for sections whose
# schema is chosen by their ``name`` key.
DYNAMIC_SECTIONS: list[tuple[str, Registry, str]] = [
    ("model", MODELS, "centernet"),
    ("data.train", DATASETS, "coco"),
    ("data.val", DATASETS, "coco"),
    ("evaluator", EVALUATORS, "coco"),
]


def _options_or_none(registry: Registry, name: str) -> type | None:
    try:
        return registry.options(name)
    except RegistryError:
        return None


def _nested_components(options: type | None) -> list[tuple[str, Registry]]:
    """The fields of an options dataclass that hold another component's section."""
    if options is None or not dataclasses.is_dataclass(options):
        return []
    out = []
    for f in dataclasses.fields(options):
        kind = f.metadata.get("component") if f.metadata else None
        if kind:
            out.append((f.name, ALL_REGISTRIES[kind]))
    return out


def _dynamic_paths(*nodes: DictConfig) -> list[tuple[str, Registry, str]]:
    """Every section whose schema its ``name`` chooses, nested ones included, as
    ``(dotted path, registry, default name)``, for the sections present in ``nodes``."""
    out: list[tuple[str, Registry, str]] = []
    queue = list(DYNAMIC_SECTIONS)
    while queue:
        path, registry, default = queue.pop(0)
        out.append((path, registry, default))
        names = {
            str(OmegaConf.select(n, path).get("name") or default)
            for n in nodes
            if _has(n, path) and isinstance(OmegaConf.select(n, path), DictConfig)
        }
        for name in sorted(names or {default} - {""}):
            for fname, sub_registry in _nested_components(_options_or_none(registry, name)):
                queue.append((f"{path}.{fname}", sub_registry, ""))
    return out


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
    bases = (
        [base] if isinstance(base, str) else list(base) if isinstance(base, ListConfig) else None
    )
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
    for path, _registry, _default in _dynamic_paths(lower, upper):
        if not (_has(lower, path) and _has(upper, path)):
            continue
        old, new = OmegaConf.select(lower, path), OmegaConf.select(upper, path)
        if (
            isinstance(old, DictConfig)
            and isinstance(new, DictConfig)
            and "name" in new
            and "name" in old
            and str(new.name) != str(old.name)
        ):
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
    for path, registry, default_name in _dynamic_paths(raw):
        if "." in path and not isinstance(
            OmegaConf.select(schema, path.rpartition(".")[0]), DictConfig
        ):
            continue  # the parent section is absent
        default = OmegaConf.select(schema, path)
        given = OmegaConf.select(raw, path) if _has(raw, path) else default
        if given is None:
            OmegaConf.update(schema, path, None, force_add=True)
            continue
        if not isinstance(given, (dict, DictConfig)):
            raise ConfigError(f"config section {path!r} must be a mapping with a 'name' key")
        name = given.get("name") or (default or {}).get("name") or default_name
        if not name:
            raise ConfigError(
                f"config section {path!r} needs a 'name' key (one of: "
                f"{', '.join(registry.names())})"
            )
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
    if node is None and parent.endswith("]"):  # an element of a (still empty) typed list
        holder = OmegaConf.select(schema, parent.rsplit("[", 1)[0])
        element = getattr(getattr(holder, "_metadata", None), "element_type", None)
        if element is not None and dataclasses.is_dataclass(element):
            return [f.name for f in dataclasses.fields(element)]
    return [str(k) for k in node] if isinstance(node, DictConfig) else []


def _merge(schema: DictConfig, node: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(schema, node)
    except oc_errors.ConfigKeyError as e:
        key = e.full_key or str(e.key)
        leaf = key.rsplit(".", 1)[-1]
        valid = _valid_keys(schema, key)
        owner = getattr(e, "object_type", None)
        if (
            "." not in key
            and owner is not None
            and dataclasses.is_dataclass(owner)
            and owner is not ExperimentConfig
        ):  # an element of a list: no full key
            valid = [f.name for f in dataclasses.fields(owner)]
            raise ConfigError(
                f"unknown config key {key!r} in a {owner.__name__} entry "
                f"({source}).{suggest(leaf, valid)}"
            ) from None
        hint = suggest(leaf, valid)
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


def _check_task(cfg: DictConfig) -> None:
    """Fill an empty ``task`` from the model; refuse unknown tasks and mismatches."""
    model = cfg.get("model")
    name = str(model.get("name")) if isinstance(model, DictConfig) and model.get("name") else ""
    model_task = MODELS.entry(name).task if name and name in MODELS else None
    task = str(cfg.task or "")
    if not task:
        cfg.task = model_task or ""
        return
    tasks = known_tasks()
    if task not in tasks:
        raise ConfigError(
            f"task={task!r} is not a task of this percepta.{suggest(task, tasks)} "
            f"Known tasks: {', '.join(tasks)} (or leave task empty: the model's)"
        )
    if model_task and model_task != task:
        raise ConfigError(
            f"model {name!r} is a {model_task!r} model but task={task!r}; set "
            f"task={model_task} or choose a {task} model"
        )


def _finish(cfg: DictConfig) -> DictConfig:
    _check_task(cfg)
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
    except Exception:
        missing = []
    if missing:
        raise ConfigError(
            "config keys without a value (set them in the yaml or as key=value): "
            + ", ".join(missing)
        )
    try:
        OmegaConf.resolve(cfg)
    except oc_errors.OmegaConfBaseException as e:
        raise ConfigError(f"cannot resolve interpolation: {str(e).splitlines()[0]}") from None
    OmegaConf.set_readonly(cfg, True)
    return cfg


def from_dict(
    data: dict, source: str = "embedded config", overrides: list[str] | None = None
) -> DictConfig:
    """Re-validate a plain dict (e.g. the config embedded in a checkpoint), with optional
    ``key=value`` overrides on top (a switched component replaces its section, as in
    :func:`load`; errors in the overrides name the command line)."""
    node = OmegaConf.create(data)
    cli_node = _parse_overrides(list(overrides or []))
    node = _drop_switched(node, cli_node)
    schema = _schema_for(OmegaConf.merge(node, cli_node))
    cfg = _merge(schema, node, source)
    return _finish(_merge(cfg, cli_node, "on the command line"))


def to_dict(cfg: DictConfig) -> dict:
    """A plain, resolved dict of builtins (safe to store in a ``weights_only`` checkpoint)."""
    return OmegaConf.to_container(cfg, resolve=True, structured_config_mode=None)  # type: ignore[return-value]


def save(cfg: DictConfig, path: str | os.PathLike) -> None:
    """Write the fully resolved config as yaml (atomically: a crash leaves the old file)."""
    from percepta.atomic import atomic_write_text

    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))


def section_object(node: DictConfig | None) -> Any:
    """Turn a typed section back into its options dataclass instance (or ``None``)."""
    if node is None:
        return None
    if OmegaConf.get_type(node) in (dict, None):
        return OmegaConf.to_container(node, resolve=True)
    return OmegaConf.to_object(node)
