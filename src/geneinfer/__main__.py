"""``python -m geneinfer`` (also what ``torchrun -m geneinfer`` runs)."""

from geneinfer.cli import main

raise SystemExit(main())
