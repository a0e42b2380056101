"""The LSTM unrolled with its gradient written out (distral_tf/agents/lstm.py)."""

import numpy as np
import pytest
import sonnet as snt
import tensorflow as tf

from distral_tf.agents import lstm as lstm_lib
from distral_tf.agents import networks

T, B, I, H = 7, 3, 5, 4


def _problem(seed: int):
  tf.random.set_seed(seed)
  core = snt.LSTM(H)
  core(tf.zeros([1, I]), core.initial_state(1))
  x = tf.random.normal([T, B, I])
  keep = tf.cast(tf.random.uniform([T, B, 1]) > 0.3, tf.float32)  # Episode starts.
  state = snt.LSTMState(tf.random.normal([B, H]), tf.random.normal([B, H]))
  # A loss that reads every output and the final state.
  weights = (tf.random.normal([T, B, H]), tf.random.normal([B, H]),
             tf.random.normal([B, H]))
  return core, x, keep, state, weights


def _loss_and_grads(unroll, core, x, keep, state, weights):
  with tf.GradientTape() as tape:
    tape.watch([x, state.hidden, state.cell])
    outputs, final = unroll()
    loss = (tf.reduce_sum(outputs * weights[0]) + tf.reduce_sum(final.hidden * weights[1])
            + tf.reduce_sum(final.cell * weights[2]))
  sources = [x, state.hidden, state.cell, core.input_to_hidden, core.hidden_to_hidden,
             core.b]
  return loss, tape.gradient(loss, sources)


@pytest.mark.parametrize('seed', [0, 1])
def test_outputs_and_every_gradient_equal_snt_lstm_stepped_through_time(seed):
  core, x, keep, state, weights = _problem(seed)
  reference = lambda: snt.static_unroll(networks._ResetCore(core), (x, keep), state)  # pylint: disable=protected-access
  written_out = lambda: lstm_lib.unroll(core, x, keep, state)
  (out_ref, final_ref), (out_new, final_new) = reference(), written_out()
  np.testing.assert_allclose(out_new, out_ref, atol=1e-6)
  np.testing.assert_allclose(final_new.cell, final_ref.cell, atol=1e-6)
  loss_ref, grads_ref = _loss_and_grads(reference, core, x, keep, state, weights)
  loss_new, grads_new = _loss_and_grads(written_out, core, x, keep, state, weights)
  assert float(loss_new) == pytest.approx(float(loss_ref), abs=1e-5)
  for g_new, g_ref in zip(grads_new, grads_ref):
    np.testing.assert_allclose(g_new, g_ref, atol=2e-6)


def test_gradient_matches_finite_differences():
  core, x, keep, state, weights = _problem(2)
  w_h = core.hidden_to_hidden
  _, grads = _loss_and_grads(lambda: lstm_lib.unroll(core, x, keep, state), core, x, keep,
                             state, weights)
  analytic = grads[4].numpy()
  eps = 1e-2
  for index in [(0, 0), (1, 5), (3, 15), (2, 9)]:
    original = w_h.numpy()

    def loss_at(delta, original=original, index=index):
      shifted = original.copy()
      shifted[index] += delta
      w_h.assign(shifted)
      outputs, final = lstm_lib.unroll(core, x, keep, state)
      value = (tf.reduce_sum(outputs * weights[0]) + tf.reduce_sum(final.hidden * weights[1])
               + tf.reduce_sum(final.cell * weights[2]))
      w_h.assign(original)
      return float(value)

    numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    assert analytic[index] == pytest.approx(numeric, rel=2e-2, abs=2e-3)


def test_the_column_keeps_the_lstm_variables_of_its_checkpoints():
  column = networks.Column(4, 'pixels', hidden_size=8)
  column.unroll(tf.zeros([1, 1, 24, 24, 3], tf.uint8), tf.ones([1, 1], tf.bool),
                column.initial_state(1))
  names = sorted(v.name for v in column._lstm.trainable_variables)  # pylint: disable=protected-access
  assert [n.split('/')[-1] for n in names] == ['b:0', 'w_h:0', 'w_i:0']
