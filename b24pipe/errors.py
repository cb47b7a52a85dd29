"""The two kinds of command failure, mapped to exit statuses by `b24pipe.cli`."""


class UsageError(Exception):
    """Bad arguments or input: exit status 2."""


class CommandError(Exception):
    """The command could not do its work (Redis down, portal unknown...): exit status 1."""
