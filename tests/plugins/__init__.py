"""Test-only percepta plug-ins, importable as ``plugins.*`` with ``tests/`` on ``sys.path``.

:mod:`plugins.toy_components` defines two toy tasks (importing it registers nothing);
:mod:`plugins.toy_tasks` is the plug-in module: importing it registers them with
:mod:`percepta.registry` (``PERCEPTA_PLUGINS=plugins.toy_tasks`` with ``PYTHONPATH=tests``
makes a fresh ``percepta`` process load it). :mod:`plugins.run_toy_task` trains one in a
fresh process (kill/resume and DDP tests).
"""
