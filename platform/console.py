"""A quiet console: the third-party output known to be harmless, filtered in one place.

Why: a fresh ``platform run`` printed a MONAI FutureWarning, MLflow's schema-creation lines, a
numexpr thread-count line, matplotlib's font-cache lines and Ray's token-auth warning - a wall of
text a user has to read to learn that nothing is wrong (issue #17 item 5). Each message below is
matched narrowly (its logger or warning category, and its text), so the same library's other
messages still show, and each says why it is harmless. The filters are installed by the CLI only
(:func:`quiet_known_noise`, from ``salient.platform.cli.main``): library code never hides a
warning from a program that imports it.

Ray's token-auth warning is not just dropped: the filter logs :func:`ray_auth_line` in its place,
one line of ours that says what is enabled and how to change it. Ray prints its warning only when
it chose the mode itself (``RAY_AUTH_MODE`` unset); a mode the user set explicitly is theirs, and
neither Ray nor the platform repeats it.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "HARMLESS_LOG_LINES",
    "HARMLESS_WARNINGS",
    "REPLACEMENT_LOGGER",
    "HarmlessLogLine",
    "HarmlessWarning",
    "quiet_known_noise",
    "ray_auth_line",
]


@dataclass(frozen=True)
class HarmlessWarning:
    """A ``warnings.warn`` message to ignore: its category and a regex its text starts with."""

    category: type[Warning]
    message: str
    why: str


@dataclass(frozen=True)
class HarmlessLogLine:
    """A log record to drop: the logger that emits it, its level, a regex its text matches at the
    start; ``replacement`` (the regex match -> a line of ours) is logged in its place when set."""

    logger: str
    level: int
    message: str
    why: str
    replacement: Callable[[re.Match[str]], str] | None = None


HARMLESS_WARNINGS: tuple[HarmlessWarning, ...] = (
    HarmlessWarning(
        FutureWarning,
        r"monai\.transforms\.spatial\.dictionary Orientationd\.__init__:labels: Current default value of argument",
        "preprocessing reorients NIfTI volumes to axcodes RAS; NIfTI's space is RAS, so MONAI's announced new "
        "default (labels from the image's space) gives the same orientation as the current one",
    ),
)

HARMLESS_LOG_LINES: tuple[HarmlessLogLine, ...] = (
    HarmlessLogLine(
        "mlflow.store.db.utils",
        logging.INFO,
        r"Creating initial MLflow database tables\.\.\.$",
        "the embedded store is created on a study's first run; that is expected, not news",
    ),
    HarmlessLogLine(
        "mlflow.store.db.utils",
        logging.INFO,
        r"Updating database tables$",
        "the schema migration that follows creating the store (or opening one from an older MLflow)",
    ),
    HarmlessLogLine(
        "numexpr.utils",
        logging.INFO,
        r"NumExpr defaulting to \d+ threads\.$",
        "numexpr (imported by pandas) picks its thread count; the platform sets torch's threads per trial itself",
    ),
    HarmlessLogLine(
        "matplotlib.font_manager",
        logging.WARNING,
        r"Matplotlib is building the font cache; this may take a moment\.$",
        "a one-time cache build on a fresh machine (or a fresh MPLCONFIGDIR); figures are unaffected",
    ),
    HarmlessLogLine(
        "matplotlib.font_manager",
        logging.INFO,
        r"generated new fontManager$",
        "the same one-time font-cache build, announced again when it ends",
    ),
    HarmlessLogLine(
        "ray._private.authentication.authentication_token_setup",
        logging.WARNING,
        r"Token authentication is (enabled|disabled) for this Ray cluster\.",
        "Ray's notice of the mode it chose, with a docs link; our line says the same in one line",
        replacement=lambda match: ray_auth_line(match.group(1) == "enabled"),
    ),
)


#: The logger our replacement lines are written to.
REPLACEMENT_LOGGER = "salient.platform.console"


class _DropKnownLines(logging.Filter):
    """Drops the records of one logger that match one of its known-harmless lines (logging the
    line's replacement, if it has one, in its place)."""

    def __init__(self, lines: list[HarmlessLogLine]):
        super().__init__()
        self.lines = [(line, re.compile(line.message)) for line in lines]

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        for line, pattern in self.lines:
            if record.levelno == line.level and (match := pattern.match(text)) is not None:
                if line.replacement is not None:
                    logging.getLogger(REPLACEMENT_LOGGER).info("%s", line.replacement(match))
                return False
        return True


def quiet_known_noise() -> None:
    """Install the filters for :data:`HARMLESS_WARNINGS` and :data:`HARMLESS_LOG_LINES` (CLI only).

    Logging filters sit on the emitting logger itself, so they hold whatever handlers the library
    configures later (MLflow and Ray set up their own at import). Calling this twice adds nothing.
    """
    # MLflow draws a progress bar per artifact download ("Downloading artifacts: 100%|...") on
    # stderr: `report` and `dashboard` read one small artifact per trial, so a page of bars.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for w in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=w.message, category=w.category)
    by_logger: dict[str, list[HarmlessLogLine]] = {}
    for line in HARMLESS_LOG_LINES:
        by_logger.setdefault(line.logger, []).append(line)
    for name, lines in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnownLines) for f in logger.filters):
            logger.addFilter(_DropKnownLines(lines))


def ray_auth_line(enabled: bool) -> str:
    """Our one line on the Ray cluster's token authentication (in place of Ray's warning).

    Args:
        enabled: whether Ray turned token authentication on.
    """
    if not enabled:
        return (
            "Ray: token authentication is off for this cluster: anyone who can reach its ports can run code on it "
            "(RAY_AUTH_MODE=token turns it on)"
        )
    if os.environ.get("RAY_AUTH_TOKEN"):
        source = "$RAY_AUTH_TOKEN"
    elif os.environ.get("RAY_AUTH_TOKEN_PATH"):
        source = os.environ["RAY_AUTH_TOKEN_PATH"]
    else:
        source = str(Path.home() / ".ray" / "auth_token")
    return f"Ray: token authentication is on for this cluster (token in {source}; RAY_AUTH_MODE=disabled turns it off)"
