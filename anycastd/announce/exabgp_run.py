"""ExaBGP, with each line of its log starting with its level: ``python -m anycastd.announce.exabgp_run CONF``.

ExaBGP's log to stdout says the category and the message but not the level, so
anycastd could not tell a warning from chatter. This runs ExaBGP's own main with
one change: its stdout formatter writes ``LEVEL category message``. anycastd reads
the level back (``anycastd.announce.exabgp.relay``) and logs ExaBGP's warnings
and errors at WARNING and ERROR. A custom ``exabgp.command`` runs without it:
its lines are then logged at DEBUG.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

FormatLine = Callable[[str, str, str, time.struct_time], str]


def levelled(short: bool, destination: str) -> FormatLine:
    """Stands in for ``exabgp.logger.format.formater``: every destination gets ``LEVEL category message``."""

    def line(message: str, source: str, level: str, timestamp: time.struct_time) -> str:
        return f"{level} {source:<15} {message}"

    return line


def main() -> None:
    import exabgp.logger  # noqa: PLC0415, F401 (loads exabgp.logger.option)
    from exabgp.application.main import main as exabgp_main  # noqa: PLC0415

    # The module, not the class of the same name that exabgp.logger re-exports: the class's setup()
    # calls the module's own reference to the formatter factory.
    module: Any = sys.modules["exabgp.logger.option"]
    module.formater = levelled
    exabgp_main()


if __name__ == "__main__":
    main()
