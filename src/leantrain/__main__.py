"""`python -m leantrain`: the `leantrain` command."""

import sys

from leantrain.cli import main

sys.exit(main())
