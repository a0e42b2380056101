"""Errors that are the user's to fix: reported as one line, exit status 2."""

import sys
from typing import Any, Callable, Sequence


class UsageError(Exception):
  """A bad flag, file or environment set-up. ``launch`` prints it and exits 2."""


USAGE_EXIT_CODE = 2


def exit_on_usage_error(main: Callable[[Sequence[str]], Any]
                        ) -> Callable[[Sequence[str]], Any]:
  """Wraps an absl ``main``: a ``UsageError`` becomes one line on stderr, exit 2."""

  def wrapped(argv: Sequence[str]) -> Any:
    try:
      return main(argv)
    except UsageError as e:
      print(f'error: {e}', file=sys.stderr, flush=True)
      sys.exit(USAGE_EXIT_CODE)

  return wrapped
