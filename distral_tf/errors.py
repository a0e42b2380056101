"""Errors that are the user's to fix: reported as one line, exit status 2."""


class UsageError(Exception):
  """A bad flag, file or environment set-up. ``launch`` prints it and exits 2."""


USAGE_EXIT_CODE = 2
