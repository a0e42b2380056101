"""Errors that are the user's to fix: reported as one line, exit status 2."""

import contextlib
import errno
import sys
from typing import Any, Callable, Iterator, Sequence


class UsageError(Exception):
  """A bad flag, file or environment set-up. ``launch`` prints it and exits 2."""


USAGE_EXIT_CODE = 2

# What a full disk (or an exhausted quota) looks like in the text of an error
# raised by native code (TensorFlow's file system layer), which has no errno.
_NO_SPACE_TEXT = 'No space left on device'


def is_disk_full(error: BaseException) -> bool:
  """Whether ``error`` says that the disk (or the user's quota) is full."""
  if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
    return True
  return _NO_SPACE_TEXT in str(error)


def disk_full_error(path: str) -> UsageError:
  return UsageError(f'no space left on the device of {path}; free some space and run '
                    'the same command again')


@contextlib.contextmanager
def disk_full_is_usage_error(path: str) -> Iterator[None]:
  """Turns a full disk while writing ``path`` into a one-line ``UsageError``."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    if is_disk_full(e):
      raise disk_full_error(path) from None
    raise


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
