import sys

if sys.argv[1:2] in (["serve"], ["reply"]):  # the server image has none of the other commands' packages
    from void_pipeline.cli_serve import main as serve_main

    raise SystemExit(serve_main(sys.argv[1:]))

from void_pipeline.cli import main

raise SystemExit(main())
