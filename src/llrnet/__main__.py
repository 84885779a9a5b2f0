"""``python -m llrnet`` is the ``llrnet`` command."""

from llrnet.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
