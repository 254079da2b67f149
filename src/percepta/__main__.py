"""``python -m percepta`` is the same as the ``percepta`` command."""

from percepta.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
