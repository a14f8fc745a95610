"""Issue 20: NaN or infinite values drawn by an initializer are named by path.

A warning by default (``NonFiniteParamWarning``), an ``InitializerError`` with
``nonfinite="raise"``, nothing with ``"ignore"``. The check is computed by the
program that draws each parameter and read back in one transfer per dry run.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lazyinit as li
from lazyinit import _dry_run

X = jnp.ones((2, 4))


def poisoned(value, at=(1, 1)):
    """An initializer whose draw is normal but for one ``value`` (NaN, inf) at ``at``."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.normal(key, shape, dtype).at[at[: len(shape)]].set(value)

    init.__name__ = f"poisoned_{value}"
    return init


LECUN = li.initializers.lecun_normal()


def model(kernel_init=LECUN, bias_init=li.initializers.zeros):
    return li.Sequential(
        [li.Linear(3), li.nn.relu, li.Linear(2, kernel_init=kernel_init, bias_init=bias_init)]
    )


@pytest.mark.parametrize("value", [jnp.nan, jnp.inf, -jnp.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("jit", [False, True])
def test_a_nonfinite_draw_warns_naming_the_path_and_the_initializer(key, value, jit):
    with pytest.warns(
        li.errors.NonFiniteParamWarning,
        match=r"The initializers drew NaN or infinite values for 1 parameter\(s\):\n  "
        rf"'2/kernel' \(poisoned_{value}\)\nCheck the initializer's arguments .*"
        r"pass nonfinite='raise' to make this an error, 'ignore' to skip the check\.",
    ):
        params = li.dry_run(model(poisoned(value)), key, X, jit=jit)
    assert not bool(jnp.isfinite(params["2"]["kernel"]).all())  # handed back, as warned
    assert bool(jnp.isfinite(params["0"]["kernel"]).all())


def test_every_offending_path_is_listed_sorted(key):
    m = model(poisoned(jnp.nan), poisoned(jnp.inf, at=(0,)))
    with pytest.warns(
        li.errors.NonFiniteParamWarning,
        match=r"for 2 parameter\(s\):\n  '2/bias' \(poisoned_inf\)\n  '2/kernel' \(poisoned_nan\)",
    ):
        li.dry_run(m, key, X)


def test_nonfinite_raise_is_an_initializer_error_and_returns_nothing(key):
    with pytest.raises(
        li.errors.InitializerError,
        match=r"NaN or infinite values for 1 parameter\(s\):\n  '2/kernel' \(poisoned_nan\)\n"
        r".*the params were not returned\.",
    ):
        li.dry_run_with_report(model(poisoned(jnp.nan)), key, X, nonfinite="raise")


def test_nonfinite_ignore_skips_the_check(key):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        params = li.dry_run(model(poisoned(jnp.nan)), key, X, nonfinite="ignore")
    assert bool(jnp.isnan(params["2"]["kernel"]).any())


def test_a_huge_but_finite_draw_is_not_flagged(key):
    """The in-draw check sums the values; a sum that overflows is confirmed on the values."""
    huge = li.initializers.constant(3e38)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        params = li.dry_run(model(huge), key, jnp.ones((2, 40)), nonfinite="raise")
    assert bool(jnp.isinf(params["2"]["kernel"].sum()))  # the sum overflows: not a NaN draw
    assert bool(jnp.isfinite(params["2"]["kernel"]).all())


def test_a_repeat_and_an_ensemble_are_checked_per_stacked_parameter(key):
    block = li.Linear(4, kernel_init=poisoned(jnp.nan, at=(0, 0)))
    for stacked in (li.Repeat(block, 3), li.Ensemble(block, 2)):
        with pytest.warns(li.errors.NonFiniteParamWarning, match=r"'kernel' \(stacked\("):
            li.dry_run(stacked, key, X)


def test_integer_parameters_are_not_checked_and_loaded_ones_are_kept_as_they_are(key):
    bad = {"0": {"kernel": jnp.full((4, 3), jnp.nan), "bias": jnp.zeros(3)}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        params = li.dry_run(model(), key, X, state=bad)  # loaded values are the caller's
        li.dry_run(li.BatchNorm(), key, X)  # an int32 count
    assert bool(jnp.isnan(params["0"]["kernel"]).all())


def test_a_dry_run_traced_by_jax_is_not_checked(key):
    """Under jax.jit there are no values yet: no warning, no error, no host transfer."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = jax.jit(lambda k: li.dry_run(model(poisoned(jnp.nan)), k, X, nonfinite="raise"))(key)
    assert bool(jnp.isnan(out["2"]["kernel"]).any())


def test_the_checks_are_read_in_one_transfer_per_dry_run(key, monkeypatch):
    transfers = []
    real = jax.device_get
    monkeypatch.setattr(jax, "device_get", lambda x: transfers.append(len(x)) or real(x))
    li.dry_run(li.Sequential([li.Linear(3) for _ in range(5)]), key, X)
    assert transfers == [3]  # one transfer: the (4, 3) kernel's check and two batches' checks


def test_a_bad_nonfinite_option_is_refused_before_anything_runs(key):
    with pytest.raises(
        li.errors.InvalidArgumentError,
        match=r"nonfinite='error': pass 'warn' \(the default: a NonFiniteParamWarning naming "
        r"each parameter\), 'raise' \(an InitializerError\) or 'ignore'\.",
    ):
        li.dry_run(model(), key, X, nonfinite="error")


def test_the_warning_points_at_the_callers_line(key):
    with pytest.warns(li.errors.NonFiniteParamWarning) as caught:
        li.dry_run(model(poisoned(jnp.nan)), key, X)
    assert caught[0].filename == __file__
    assert _dry_run.NonFinite.__args__ == ("warn", "raise", "ignore")


def test_values_are_those_of_the_initializer_at_the_path_key(key):
    """The check changes nothing in what is drawn."""
    with pytest.warns(li.errors.NonFiniteParamWarning):
        params = li.dry_run(model(poisoned(jnp.nan)), key, X)
    expected = poisoned(jnp.nan)(li.param_key(key, "2/kernel"), (3, 2), jnp.float32)
    np.testing.assert_array_equal(params["2"]["kernel"], expected)
