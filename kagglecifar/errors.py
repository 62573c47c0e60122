"""The one exception type the CLI turns into a one-line error and a non-zero exit."""


class KaggleCifarError(Exception):
    """A problem the user can fix; the message names the file or option and what is wrong."""


class TrainingDiverged(KaggleCifarError):
    """Training stopped because the loss was no longer finite; the message is the one line the user sees."""
