"""V-trace (distral_tf/agents/vtrace.py) against a direct numpy implementation."""

import numpy as np
import pytest

from distral_tf.agents import vtrace

T, B = 7, 4


def _direct(log_rhos, discounts, rewards, values, next_values, continues,
            rho_bar, c_bar):
  """IMPALA's eq. (1) written as a sum, one element at a time.

  v_s = V(x_s) + sum_{t >= s, same episode} (prod_{s <= i < t} d_i c_i) delta_t,
  the sum stopping after the step that ends the episode.
  """
  rhos = np.exp(log_rhos)
  vs = np.zeros((T, B))
  adv = np.zeros((T, B))
  for b in range(B):
    deltas = np.minimum(rho_bar, rhos[:, b]) * (
        rewards[:, b] + discounts[:, b] * next_values[:, b] - values[:, b])
    for s in range(T):
      total, weight = 0.0, 1.0
      for t in range(s, T):
        total += weight * deltas[t]
        if not continues[t, b]:
          break
        weight *= discounts[t, b] * min(c_bar, rhos[t, b])
      vs[s, b] = values[s, b] + total
    for s in range(T):
      if continues[s, b] and s + 1 < T:
        next_v = vs[s + 1, b]
      else:
        next_v = next_values[s, b]  # Bootstrap, final observation or nothing.
      adv[s, b] = min(rho_bar, rhos[s, b]) * (
          rewards[s, b] + discounts[s, b] * next_v - values[s, b])
  return vs, adv


def _inputs(seed):
  rng = np.random.default_rng(seed)
  values = rng.normal(size=(T + 1, B))
  env_discounts = (rng.random((T, B)) > 0.2).astype(np.float64)  # Terminals.
  cut = (rng.random((T, B)) < 0.2) & (env_discounts > 0)        # Time-limit cuts.
  ends = (env_discounts == 0) | cut
  final_values = rng.normal(size=(T, B))
  next_values = np.where(cut, final_values, values[1:])
  return dict(log_rhos=rng.normal(scale=0.7, size=(T, B)),
              discounts=0.9 * env_discounts, rewards=rng.normal(size=(T, B)),
              values=values[:T], next_values=next_values,
              continues=(~ends).astype(np.float64))


@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('rho_bar,c_bar', [(1.0, 1.0), (2.0, 0.5), (100.0, 100.0)])
def test_vtrace_matches_direct_sum(seed, rho_bar, c_bar):
  x = _inputs(seed)
  got = vtrace.vtrace(**{k: np.float32(v) for k, v in x.items()},
                      rho_bar=rho_bar, c_bar=c_bar)
  vs, adv = _direct(**x, rho_bar=rho_bar, c_bar=c_bar)
  np.testing.assert_allclose(got.vs, vs, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(got.pg_advantages, adv, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(got.clipped_rhos, np.minimum(rho_bar, np.exp(x['log_rhos'])),
                             rtol=1e-5)


def test_on_policy_vtrace_is_the_n_step_return():
  x = _inputs(3)
  x['log_rhos'] = np.zeros((T, B))
  got = vtrace.vtrace(**{k: np.float32(v) for k, v in x.items()})
  # G_t = r_t + d_t (G_{t+1} if the episode goes on, else V'_t), G_T = V'_{T-1}.
  returns = np.zeros((T, B))
  for t in reversed(range(T)):
    if t == T - 1:
      nxt = x['next_values'][t]
    else:
      nxt = np.where(x['continues'][t] > 0, returns[t + 1], x['next_values'][t])
    returns[t] = x['rewards'][t] + x['discounts'][t] * nxt
  np.testing.assert_allclose(got.vs, returns, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(got.pg_advantages, returns - x['values'], rtol=1e-4, atol=1e-4)


def test_a_cut_episode_never_sees_the_next_one():
  """Huge rewards after a time-limit cut change nothing before it."""
  x = _inputs(4)
  x['continues'][:, 0] = 1.0
  x['discounts'][:, 0] = 0.9
  x['continues'][3, 0] = 0.0  # Cut after step 3; steps 4.. are a new episode.
  before = vtrace.vtrace(**{k: np.float32(v) for k, v in x.items()})
  x['rewards'][4:, 0] = 1e6
  x['values'][4:, 0] = -1e6
  after = vtrace.vtrace(**{k: np.float32(v) for k, v in x.items()})
  np.testing.assert_allclose(after.vs[:4, 0], before.vs[:4, 0])
  np.testing.assert_allclose(after.pg_advantages[:4, 0], before.pg_advantages[:4, 0])
  assert not np.allclose(after.vs[4:, 0], before.vs[4:, 0])
