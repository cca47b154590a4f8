"""`python -m anycastd` is the `anycastd` command."""

from __future__ import annotations

import sys

from anycastd.cli.anycastd import main

sys.exit(main())
