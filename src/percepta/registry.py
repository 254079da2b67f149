"""Name -> builder tables with helpful "did you mean" errors.

A registry maps a short name (``"centernet"``) to a builder (a class or function) and, optionally,
to the dataclass that declares the builder's options. The config system uses the options class to
validate a config section before anything is built, so a typo fails at start-up with the key
name and the nearest valid key.

The registries are filled by importing the modules that define the components;
:func:`import_all` does that once, so ``percepta list`` and config validation see everything.
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Registry",
    "RegistryError",
    "MODELS",
    "DATASETS",
    "EVALUATORS",
    "LOSSES",
    "ALL_REGISTRIES",
    "import_all",
    "known_tasks",
    "suggest",
]


class RegistryError(KeyError):
    """An unknown or duplicate name; the message lists the nearest valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0]) if self.args else ""


def suggest(name: str, candidates: Iterator[str] | list[str], n: int = 3) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest candidates, or an empty string."""
    close = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


@dataclass(frozen=True)
class Entry:
    """One registered component.

    Attributes:
        name, builder, options, help: the registry name, the builder (class or function), the
            options dataclass it takes (validated by the config system) and a one-line text.
        task: the task a model belongs to (``"detection"``...): a run's ``task`` must match its
            model's, and checkpoints are checked against it on load. ``None`` for components
            that serve any task (datasets, evaluators, losses).
        resolve: optional ``resolve(options, facts) -> options`` that completes a model's
            options before it is built (e.g. class names read from teacher checkpoints);
            ``facts`` is :class:`percepta.data.facts.DataFacts`. The engine writes the
            completed options back into the run's config, so checkpoints rebuild the model.
    """

    name: str
    builder: Callable[..., Any]
    options: type | None
    help: str
    task: str | None = None
    resolve: Callable[[Any, Any], Any] | None = None


class Registry:
    """A table of named builders for one kind of component (models, datasets, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(
        self,
        name: str,
        options: type | None = None,
        help: str | None = None,
        *,
        task: str | None = None,
        resolve: Callable[[Any, Any], Any] | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: ``@MODELS.register("centernet", options=CenterNetConfig, task="detection")``."""

        def deco(builder: Callable[..., Any]) -> Callable[..., Any]:
            self.add(name, builder, options=options, help=help, task=task, resolve=resolve)
            return builder

        return deco

    def add(
        self,
        name: str,
        builder: Callable[..., Any],
        options: type | None = None,
        help: str | None = None,
        *,
        task: str | None = None,
        resolve: Callable[[Any, Any], Any] | None = None,
    ) -> None:
        """Register ``builder`` under ``name``; re-registering the same object is a no-op."""
        old = self._entries.get(name)
        if old is not None and old.builder is not builder:
            raise RegistryError(f"{self.kind} {name!r} is already registered by {old.builder!r}")
        doc = help if help is not None else (builder.__doc__ or "").strip().split("\n")[0]
        self._entries[name] = Entry(name, builder, options, doc, task, resolve)

    def remove(self, name: str) -> None:
        """Unregister ``name`` (test plug-ins clean up after themselves)."""
        self._entries.pop(name, None)

    def entry(self, name: str) -> Entry:
        """The entry for ``name``; unknown names raise with a suggestion."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none registered)"
            raise RegistryError(
                f"unknown {self.kind} {name!r}.{suggest(name, self._entries)} Known: {known}"
            ) from None

    def get(self, name: str) -> Callable[..., Any]:
        return self.entry(name).builder

    def options(self, name: str) -> type | None:
        return self.entry(name).options

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[k] for k in sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


MODELS = Registry("model")
DATASETS = Registry("dataset")
EVALUATORS = Registry("evaluator")
LOSSES = Registry("loss")
ALL_REGISTRIES = {
    "models": MODELS,
    "datasets": DATASETS,
    "evaluators": EVALUATORS,
    "losses": LOSSES,
}

# Modules whose import registers components. Kept explicit (no package scanning) so the import
# order is predictable and a broken optional module shows up as a clear error.
_COMPONENT_MODULES = (
    "percepta.data.coco",
    "percepta.data.image_folder",
    "percepta.data.iqa_table",
    "percepta.data.vg_sgg_dataset",
    "percepta.detection.centernet",
    "percepta.detection.faster_rcnn",
    "percepta.detection.evaluation",
    "percepta.losses.focal",
    "percepta.losses.ranking",
    "percepta.scene_graph.evaluation",
    "percepta.scene_graph.model",
    "percepta.quality.evaluation",
    "percepta.quality.iqt",
    "percepta.quality.triq",
)
_imported = False


def plugin_modules() -> list[str]:
    """Modules named in ``PERCEPTA_PLUGINS`` (comma-separated): third-party components."""
    return [m.strip() for m in os.environ.get("PERCEPTA_PLUGINS", "").split(",") if m.strip()]


def import_all() -> None:
    """Import every component module once so all registries are filled.

    Modules that do not exist yet (capabilities not built) are skipped silently; a module that
    exists but fails to import raises, because that is a bug the user must see. Plug-in modules
    named in the ``PERCEPTA_PLUGINS`` environment variable (``pkg.module,other.module``) are
    imported too, so models, datasets and evaluators of your own run through ``percepta
    train/eval`` like the built-in ones; one that cannot be imported is an error naming it.
    """
    global _imported
    if _imported:
        return
    for mod in _COMPONENT_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
    for mod in plugin_modules():
        try:
            importlib.import_module(mod)
        except ImportError as e:
            from percepta.errors import PerceptaError

            raise PerceptaError(
                f"PERCEPTA_PLUGINS names {mod!r}, which cannot be imported: "
                f"{e} (is its folder on PYTHONPATH?)"
            ) from None
    _imported = True


def known_tasks() -> list[str]:
    """The tasks of the registered models (a run's ``task`` must be one of them)."""
    import_all()
    return sorted({e.task for e in MODELS if e.task})
