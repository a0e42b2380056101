"""Tests of the algorithms table (appendix A) and coefficients()."""

import pytest

from distral_tf import cli
from distral_tf import errors
from distral_tf.agents import algorithms

# name: (alpha, architecture, distilled, entropy_bonus, has_pi0), from
# EQUATIONS.md "The seven algorithms" and appendix B (alpha = 0.5 for KL+ent).
TABLE = {
    'a3c': (0.0, 'separate', False, True, False),
    'a3c_multitask': (0.0, 'shared', False, True, False),
    'a3c_2col': (0.0, 'two_column', False, True, True),
    'kl_1col': (1.0, 'separate', True, False, True),
    'kl_ent_1col': (0.5, 'separate', True, False, True),
    'kl_2col': (1.0, 'two_column', True, False, True),
    'kl_ent_2col': (0.5, 'two_column', True, False, True),
}


def test_table_matches_paper():
  assert set(algorithms.ALGORITHMS) == set(TABLE)
  for name, (alpha, arch, distilled, bonus, has_pi0) in TABLE.items():
    algo = algorithms.ALGORITHMS[name]
    assert algo.name == name
    assert algo.alpha == alpha, name
    assert algo.architecture == arch, name
    assert algo.architecture in algorithms.ARCHITECTURES
    assert algo.distilled == distilled, name
    assert algo.entropy_bonus == bonus, name
    assert algo.has_pi0 == has_pi0, name


def test_names_agree_with_cli():
  assert tuple(algorithms.ALGORITHMS) == cli.DEEP_ALGORITHMS


def test_get():
  assert algorithms.get('kl_2col') is algorithms.ALGORITHMS['kl_2col']
  with pytest.raises(errors.UsageError, match='unknown deep algorithm'):
    algorithms.get('soft_q')


@pytest.mark.parametrize('name', list(TABLE))
@pytest.mark.parametrize('entropy_cost', [0.01, 0.05])
def test_coefficients_defaults(name, entropy_cost):
  algo = algorithms.ALGORITHMS[name]
  c = algorithms.coefficients(algo, entropy_cost)
  alpha = TABLE[name][0]
  assert c.alpha == alpha
  assert c.beta == pytest.approx(1.0 / entropy_cost)
  # c_KL + c_Ent = 1/beta and alpha = c_KL / (c_KL + c_Ent).
  assert c.c_kl + c.c_ent == pytest.approx(entropy_cost)
  assert c.c_kl / (c.c_kl + c.c_ent) == pytest.approx(alpha)
  assert c.c_kl == pytest.approx(c.alpha / c.beta)


def test_a3c_entropy_cost_is_c_ent():
  c = algorithms.coefficients(algorithms.ALGORITHMS['a3c'], 0.02)
  assert c.c_kl == 0.0
  assert c.c_ent == pytest.approx(0.02)


def test_kl_has_no_entropy_term():
  c = algorithms.coefficients(algorithms.ALGORITHMS['kl_2col'], 0.02)
  assert c.c_ent == 0.0
  assert c.c_kl == pytest.approx(0.02)


def test_alpha_override_for_distilled():
  c = algorithms.coefficients(algorithms.ALGORITHMS['kl_ent_2col'], 0.1,
                              alpha=0.25)
  assert c.alpha == 0.25
  assert c.c_kl == pytest.approx(0.025)
  assert c.c_ent == pytest.approx(0.075)
  assert c.beta == pytest.approx(10.0)
  for edge in (0.0, 1.0):
    assert algorithms.coefficients(
        algorithms.ALGORITHMS['kl_1col'], 0.1, alpha=edge).alpha == edge


@pytest.mark.parametrize('name', ['a3c', 'a3c_multitask', 'a3c_2col'])
def test_alpha_override_refused_for_a3c(name):
  with pytest.raises(errors.UsageError, match='only to the distilled') as e:
    algorithms.coefficients(algorithms.ALGORITHMS[name], 0.01, alpha=0.5)
  assert '\n' not in str(e.value)


@pytest.mark.parametrize('alpha', [-0.1, 1.5])
def test_alpha_out_of_range(alpha):
  with pytest.raises(errors.UsageError, match=r'\[0, 1\]'):
    algorithms.coefficients(algorithms.ALGORITHMS['kl_2col'], 0.01, alpha=alpha)


@pytest.mark.parametrize('cost', [0.0, -1.0])
def test_entropy_cost_must_be_positive(cost):
  with pytest.raises(errors.UsageError, match='entropy_cost'):
    algorithms.coefficients(algorithms.ALGORITHMS['kl_2col'], cost)


def test_dataclasses_are_frozen():
  algo = algorithms.ALGORITHMS['a3c']
  with pytest.raises(Exception):
    algo.alpha = 1.0  # type: ignore[misc]
