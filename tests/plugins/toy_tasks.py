"""The toy-task plug-in: importing this module registers the test-only tasks
``toy_given_boxes`` and ``toy_pairs`` (:mod:`plugins.toy_components`) with
:mod:`percepta.registry`, as a third-party plug-in package would on import.

Tests that must leave the shipped registry untouched call
:func:`plugins.toy_components.unregister` when done (and ``register()`` to add them again).
"""

from __future__ import annotations

from plugins.toy_components import register

register()
