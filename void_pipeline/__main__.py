"""``python -m void_pipeline`` and the ``void-pipeline`` console script: one dispatch (``./void-pipeline``, the
launcher at the repo root, runs this module).

serve, reply, export-adapter and letta import only their own modules: the server image has none of the other
commands' packages.
"""

from __future__ import annotations

import sys

from void_pipeline.cli_serve import OWN_COMMANDS
from void_pipeline.cli_serve import main as serve_main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in OWN_COMMANDS:
        return serve_main(argv)
    from void_pipeline.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
