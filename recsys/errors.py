"""The one exception type for bad input at the boundary: the CLI prints it without a traceback."""


class UserError(Exception):
    """Bad input from the user (file, field, value); the message says what was expected."""


class DataFormatError(UserError, ValueError):
    """A malformed input file: the message names the file, the line/row, the column and what
    was expected."""


class ConfigError(UserError, ValueError):
    """A config value that does not fit its typed field (recsys.schema): the message names
    the dotted field path and what was expected; callers prefix the file."""
