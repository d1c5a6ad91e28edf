from saferlhf.cli import main

raise SystemExit(main())
