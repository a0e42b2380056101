"""The learner's losses, step by step, equal the recorded ones (``learner_regression``)."""

import json

import numpy as np
import pytest

from tests import learner_regression


@pytest.fixture(scope='module')
def recorded():
  with open(learner_regression.DATA) as f:
    return json.load(f)


@pytest.mark.parametrize('run', learner_regression.RUNS)
def test_three_learner_steps_give_the_recorded_losses(recorded, run):
  name, kind = run.split('/')
  steps = learner_regression.run_steps(name, kind)
  assert len(steps) == len(recorded[run])
  for step, (got, want) in enumerate(zip(steps, recorded[run])):
    assert got.keys() == want.keys()
    for key in want:
      np.testing.assert_allclose(got[key], want[key], rtol=2e-4, atol=2e-6,
                                 err_msg=f'{run} step {step} {key}')
