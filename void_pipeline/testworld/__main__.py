from void_pipeline.testworld.cli import main

raise SystemExit(main())
