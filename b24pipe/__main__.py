from b24pipe.cli import main

raise SystemExit(main())
