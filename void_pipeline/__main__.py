import sys

# serve, reply, export-adapter and letta: the server image has none of the other commands' packages
if sys.argv[1:2] in (["serve"], ["reply"], ["export-adapter"], ["letta"]):
    from void_pipeline.cli_serve import main as serve_main

    raise SystemExit(serve_main(sys.argv[1:]))

from void_pipeline.cli import main

raise SystemExit(main())
