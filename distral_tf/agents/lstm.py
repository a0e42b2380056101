"""An LSTM unrolled over a whole unroll at once, with its gradient written out.

The same function as stepping ``snt.LSTM`` through time (with its state reset
to zeros where an episode starts), on the LSTM's own variables, so that
checkpoints are unchanged; only the computation is arranged for a CPU:

* the input projection ``x_t W_i + b`` of every step is one matrix product
  over all ``T * B`` inputs, not ``T`` small ones;
* the backward pass (back-propagation through time, below) accumulates the
  per-step gate gradients and forms the weight gradients with one matrix
  product each, ``W_h``'s as ``H_prev^T dG``, instead of summing ``T``
  products of the size of the weights.

For gates ``z_t = x_t W_i + h'_{t-1} W_h + b`` split into ``(i, f, g, o)``,
with ``h'_{t-1} = keep_t h_{t-1}`` and ``c'_{t-1} = keep_t c_{t-1}`` (keep 0
where an episode starts)::

  c_t = s(f) c'_{t-1} + s(i) tanh(g),   h_t = s(o) tanh(c_t)

and, going back from ``dh_t`` (from the outputs and step t+1) and ``dc_t``::

  do = dh_t tanh(c_t) s'(o)           dc = dc_t + dh_t s(o) (1 - tanh(c_t)^2)
  di = dc tanh(g) s'(i)               df = dc c'_{t-1} s'(f)
  dg = dc s(i) (1 - tanh(g)^2)
  dh_{t-1} = keep_t (dz_t W_h^T)      dc_{t-1} = keep_t dc s(f)

where ``s`` is the logistic sigmoid and ``s' = s (1 - s)``. The tests check
the outputs and every gradient against automatic differentiation of
``snt.LSTM`` stepped through time.
"""

from __future__ import annotations

import sonnet as snt
import tensorflow as tf


def unroll(lstm: snt.LSTM, inputs: tf.Tensor, keep: tf.Tensor, state: snt.LSTMState
           ) -> tuple[tf.Tensor, snt.LSTMState]:
  """``lstm`` over ``inputs`` ``[T, B, I]`` (static T); ``keep`` ``[T, B, 1]`` 0 or 1.

  The state is multiplied by ``keep[t]`` before step t. Returns the hidden
  outputs ``[T, B, H]`` and the state after the last step. ``lstm`` must have
  its variables (called once before).
  """
  outputs, hidden, cell = _unroll(inputs, keep, state.hidden, state.cell,
                                  tf.convert_to_tensor(lstm.input_to_hidden),
                                  tf.convert_to_tensor(lstm.hidden_to_hidden),
                                  tf.convert_to_tensor(lstm.b))
  return outputs, snt.LSTMState(hidden=hidden, cell=cell)


@tf.custom_gradient
def _unroll(inputs, keep, hidden, cell, w_i, w_h, b):
  """The forward pass and its gradient function (see the module docstring)."""
  steps = inputs.shape[0]
  batch = tf.shape(inputs)[1]
  size = hidden.shape[-1]
  flat_inputs = tf.reshape(inputs, [-1, inputs.shape[-1]])
  projected = tf.reshape(tf.matmul(flat_inputs, w_i) + b, [steps, batch, 4 * size])
  saved = []  # Per step: h'_{t-1}, c'_{t-1}, s(i), s(f), tanh(g), s(o), tanh(c_t).
  outputs = []
  for t in range(steps):
    hidden, cell = hidden * keep[t], cell * keep[t]
    gates = projected[t] + tf.matmul(hidden, w_h)
    i, f, g, o = tf.split(gates, 4, axis=1)
    si, sf, tg, so = tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)
    new_cell = sf * cell + si * tg
    tc = tf.tanh(new_cell)
    saved.append((hidden, cell, si, sf, tg, so, tc))
    hidden, cell = so * tc, new_cell
    outputs.append(hidden)

  def grad(d_outputs, d_hidden, d_cell):
    d_hidden = tf.zeros_like(hidden) if d_hidden is None else d_hidden
    d_cell = tf.zeros_like(cell) if d_cell is None else d_cell
    d_gates = [None] * steps
    for t in reversed(range(steps)):
      prev_h, prev_c, si, sf, tg, so, tc = saved[t]
      dh = d_hidden + d_outputs[t]
      dc = d_cell + dh * so * (1.0 - tc * tc)
      d_gates[t] = tf.concat([dc * tg * si * (1.0 - si), dc * prev_c * sf * (1.0 - sf),
                              dc * si * (1.0 - tg * tg), dh * tc * so * (1.0 - so)],
                             axis=1)
      d_hidden = tf.matmul(d_gates[t], w_h, transpose_b=True) * keep[t]
      d_cell = dc * sf * keep[t]
    flat_d_gates = tf.reshape(tf.stack(d_gates), [-1, 4 * size])
    flat_prev_h = tf.reshape(tf.stack([s[0] for s in saved]), [-1, size])
    d_inputs = tf.reshape(tf.matmul(flat_d_gates, w_i, transpose_b=True), tf.shape(inputs))
    d_w_i = tf.matmul(flat_inputs, flat_d_gates, transpose_a=True)
    d_w_h = tf.matmul(flat_prev_h, flat_d_gates, transpose_a=True)
    d_b = tf.reduce_sum(flat_d_gates, axis=0)
    return d_inputs, tf.zeros_like(keep), d_hidden, d_cell, d_w_i, d_w_h, d_b

  return (tf.stack(outputs), hidden, cell), grad
