"""Expected failures: each message names the file or field, the reason and the fix (no traceback shown).

Each class carries the CLI's exit code, so a scheduler or script can tell the failures apart; docs/cli.md
lists them (and a test checks that list against these classes)."""


class RagtuneError(Exception):
    """Base for failures a user can act on; the CLI prints the message and exits with `exit_code`."""

    exit_code = 9  # a stage's input is missing or stale: run the stage that makes it


class ConfigError(RagtuneError):
    """params.yaml, an override or a CLI option is wrong."""

    exit_code = 3


class SourceError(RagtuneError):
    """A source folder or file cannot be used (missing, unreadable, a malformed row)."""

    exit_code = 4


class GateFailed(RagtuneError):
    """A quality gate failed (data expectations, a recall drop); nothing downstream ran."""

    exit_code = 5


class StoreError(RagtuneError):
    """The vector store refused, could not be reached, or a guard stopped the write."""

    exit_code = 6


class VerifyError(RagtuneError):
    """What a stage wrote does not check out (index vs manifest, a saved adapter)."""

    exit_code = 7


class VersionError(RagtuneError):
    """git/DVC refused to record, push or fetch a version."""

    exit_code = 8


class BusyError(RagtuneError):
    """Another run holds the lock on the same index or workspace; retry when it ends."""

    exit_code = 10


# Not RagtuneErrors, but codes a caller sees too.
EXIT_UNEXPECTED = 1  # a bug or a broken environment: the traceback is shown
EXIT_USAGE = 2  # the command line itself: an unknown option, a missing argument (click's code)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)
