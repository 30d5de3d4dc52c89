"""`python -m cnnkit` runs the command line (also under torchrun)."""

from cnnkit.cli import main

raise SystemExit(main())
