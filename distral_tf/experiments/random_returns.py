"""The recorded returns of the uniform random policy per task (``random_returns.json``).

Written by ``python -m distral_tf.experiments.random_baseline --write``; read by
the learning check (``sample_efficiency --times_random``). No flags here, so
any command may import it.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

from distral_tf import errors

RECORD_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           'random_returns.json')


def read_records(path: str = RECORD_PATH) -> dict[str, dict[str, dict]]:
  """The recorded baselines: level set -> task -> ``summarise``'s fields."""
  if not os.path.exists(path):
    return {}
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise errors.UsageError(f'{path} cannot be read ({e}); run '
                            f'python -m distral_tf.experiments.random_baseline --write to record it again') from None


def random_return(level_set: str, task: str, path: str = RECORD_PATH) -> float | None:
  """The recorded mean return of the random policy on ``task``; None if not recorded."""
  entry = read_records(path).get(level_set, {}).get(task)
  return None if entry is None else float(entry['mean'])


def write_records(level_set: str, stats: Mapping[str, dict], seed: int,
                  path: str = RECORD_PATH) -> None:
  """Merges ``stats`` (task -> fields) for ``level_set`` into the record file."""
  records = read_records(path)
  records.setdefault(level_set, {}).update(
      {task: dict(fields, seed=seed) for task, fields in stats.items()})
  tmp = f'{path}.tmp'
  with errors.disk_full_is_usage_error(path):
    with open(tmp, 'w', encoding='utf-8') as f:
      json.dump(records, f, indent=1, sort_keys=True)
      f.write('\n')
    os.replace(tmp, path)
