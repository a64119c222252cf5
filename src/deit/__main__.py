"""`python -m deit ...` (what `torchrun -m deit train ...` runs)."""

import sys

from deit.cli import main

sys.exit(main())
