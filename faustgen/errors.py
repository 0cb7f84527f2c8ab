"""The one exception type users see: the CLI prints it as a one-line error and exits 2."""


class FaustgenError(Exception):
    """Bad input or an unsupported model: the message is a complete, user-facing sentence."""


class VerificationError(FaustgenError):
    """Outputs differ from the reference beyond tolerance (exit code 1)."""
