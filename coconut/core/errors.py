"""Errors that mean "the input is wrong", not "the program is wrong".

The command-line entry points print these as one message naming the problem and the fix, without
a traceback; anything else is a bug and keeps its traceback.
"""


class UserInputError(Exception):
    """Bad data, configuration or checkpoint given by the user."""


class ConfigError(UserInputError, ValueError):
    """A configuration value out of range or an unknown choice; the message names the key."""


class CheckpointError(UserInputError, ValueError):
    """A checkpoint that cannot be used as asked: missing, incomplete, not from coconut-train, or
    trained differently."""
