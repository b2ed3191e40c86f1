"""Expected failures: each message names the file or field, the reason and the fix (no traceback shown)."""


class RagtuneError(Exception):
    """Base for failures a user can act on; the CLI prints the message and exits non-zero."""


class ConfigError(RagtuneError):
    """params.yaml, an override or a CLI option is wrong."""


class SourceError(RagtuneError):
    """A source folder or file cannot be used."""


class GateFailed(RagtuneError):
    """The data quality gate failed; nothing downstream ran."""


class StoreError(RagtuneError):
    """The vector store refused, could not be reached, or a guard stopped the write."""


class VerifyError(RagtuneError):
    """The index does not match the manifest after writing."""
