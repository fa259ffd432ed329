"""binprune's messages go through the ``logging`` logger ``"binprune"`` (progress bars stay on tqdm).

Modules log through ``logging.getLogger(__name__)`` (children of ``"binprune"``), so an
application controls them as usual (``logging.getLogger("binprune").setLevel(...)``, its own
handlers). When nothing is configured (no handler on the logger or its ancestors), the calls
that ask for progress output (``train(progress=...)``, the command line) show the messages on
standard output for their duration through :func:`console_messages`, as before.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator

__all__ = ["LOGGER_NAME", "console_messages"]

LOGGER_NAME = "binprune"


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return text if record.levelno < logging.WARNING else f"binprune: {record.levelname.lower()}: {text}"


@contextlib.contextmanager
def console_messages(enabled: bool = True) -> Iterator[None]:
    """Show binprune's INFO messages on stdout (warnings on stderr) while the block runs, unless
    the application has configured logging itself."""
    logger = logging.getLogger(LOGGER_NAME)
    if not enabled or logger.hasHandlers():
        yield
        return
    out, err = logging.StreamHandler(sys.stdout), logging.StreamHandler(sys.stderr)
    out.addFilter(lambda r: r.levelno < logging.WARNING)
    err.setLevel(logging.WARNING)
    for handler in (out, err):
        handler.setFormatter(_Format())
        logger.addHandler(handler)
    level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for handler in (out, err):
            logger.removeHandler(handler)
            handler.flush()
        logger.setLevel(level)
