"""``python -m logstore``: the same as the ``logstore`` command (see :mod:`logstore.cli`)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
