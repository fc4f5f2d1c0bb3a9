from void_pipeline.cli import main

raise SystemExit(main())
