"""li.TrainingCheckpoints: resuming a jit-compiled optax loop through orbax gives the same losses."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lazyinit as li

MODEL = li.Sequential([li.Linear(8), li.nn.relu, li.Linear(1)])
OPTIMIZER = optax.adam(1e-2)
XS = jax.random.normal(jax.random.key(1), (16, 3))
YS = jnp.sum(XS, axis=1, keepdims=True)


def fresh_state():
    params = li.dry_run(MODEL, jax.random.key(0), XS)
    return {
        "params": params,
        "opt_state": OPTIMIZER.init(params),
        "step": jnp.asarray(0, jnp.int32),
        "buffers": {},
    }


@jax.jit
def train_step(state):
    def loss_fn(p):
        return jnp.mean((MODEL(p, XS) - YS) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(state["params"])
    updates, opt_state = OPTIMIZER.update(grads, state["opt_state"], state["params"])
    new = {
        "params": optax.apply_updates(state["params"], updates),
        "opt_state": opt_state,
        "step": state["step"] + 1,
        "buffers": state["buffers"],
    }
    return new, loss


def run(state, steps, ckpts=None):
    losses = []
    for _ in range(steps):
        state, loss = train_step(state)
        losses.append(float(loss))
        if ckpts is not None:
            ckpts.save(int(state["step"]), state)
    return state, losses


def test_resuming_gives_the_same_losses_as_not_stopping(tmp_path):
    _, straight = run(fresh_state(), 10)
    with li.TrainingCheckpoints(tmp_path / "run", keep=2) as ckpts:
        run(fresh_state(), 5, ckpts)
        assert ckpts.steps() == [4, 5]  # keep-last-N deleted the older ones
    with li.TrainingCheckpoints(tmp_path / "run", keep=2) as ckpts:  # a new process, in effect
        state = ckpts.restore(like=fresh_state())
    assert int(state["step"]) == 5
    _, resumed = run(state, 5)
    assert resumed == straight[5:]


def test_restore_against_an_abstract_target(tmp_path):
    state, _ = run(fresh_state(), 2)
    with li.TrainingCheckpoints(tmp_path / "run") as ckpts:
        ckpts.save(2, state)
        abstract = jax.eval_shape(fresh_state)
        restored = ckpts.restore(like=abstract, step=2)
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        np.testing.assert_array_equal(a, b)


def test_save_every_skips_steps_unless_forced(tmp_path):
    with li.TrainingCheckpoints(tmp_path / "run", save_every=2) as ckpts:
        state = fresh_state()
        saved = [ckpts.save(s, state) for s in range(4)] + [ckpts.save(5, state, force=True)]
        assert saved == [True, False, True, False, True]
        assert ckpts.steps() == [0, 2, 5] and ckpts.latest_step() == 5


def test_restore_lists_every_mismatch_first(tmp_path):
    with li.TrainingCheckpoints(tmp_path / "run") as ckpts:
        ckpts.save(0, fresh_state())
        like = fresh_state()
        like["params"]["0"]["kernel"] = jnp.zeros((8, 3))
        like["step"] = jnp.asarray(0, jnp.float32)
        del like["params"]["2"]["bias"]
        with pytest.raises(
            li.errors.StateMismatchError, match=r"Cannot restore step 0 .*\(3 problem"
        ) as e:
            ckpts.restore(like=like)
    text = "\n".join(e.value.problems)
    assert "size mismatch for 'params/0/kernel': found shape (3, 8), expected (8, 3)" in text
    assert "dtype mismatch for 'step': found int32, expected float32" in text
    assert "unexpected key 'params/2/bias'" in text


def test_placeholders_and_deleted_arrays_are_refused_by_path(tmp_path):
    state = fresh_state()
    with li.TrainingCheckpoints(tmp_path / "run") as ckpts:
        lazy = dict(state, params=li.lazy_state(MODEL))
        with pytest.raises(
            li.errors.UninitializedParamError,
            match="placeholders: params/0/bias, params/0/kernel, ",
        ):
            ckpts.save(0, lazy)
        state["params"]["2"]["bias"].delete()
        with pytest.raises(li.errors.DeletedParamError, match="deleted arrays: params/2/bias"):
            ckpts.save(0, state)
        assert ckpts.steps() == []
        ckpts.save(0, fresh_state())
        with pytest.raises(
            li.errors.UninitializedParamError, match="like= holds placeholders: params/0"
        ):
            ckpts.restore(like=lazy)


def test_restoring_from_an_empty_directory_says_so(tmp_path):
    with li.TrainingCheckpoints(tmp_path / "run") as ckpts:
        with pytest.raises(
            FileNotFoundError, match="No training checkpoint in .*nothing to resume"
        ):
            ckpts.restore(like=fresh_state())
        ckpts.save(1, fresh_state())
        with pytest.raises(FileNotFoundError, match=r"for step 7 .* it has steps \[1\]"):
            ckpts.restore(like=fresh_state(), step=7)


SHARDED = textwrap.dedent(
    """
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import lazyinit as li

    assert jax.device_count() == 4
    mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("data", "model"))
    saved_on = NamedSharding(mesh, P("data", "model"))
    state = {"w": jax.device_put(jnp.arange(32.0).reshape(4, 8), saved_on), "step": jnp.asarray(3)}
    with li.TrainingCheckpoints(sys.argv[1]) as ckpts:
        ckpts.save(3, state)
        for target in (saved_on, NamedSharding(mesh, P(None, "model"))):
            like = {"w": jax.ShapeDtypeStruct((4, 8), jnp.float32, sharding=target),
                    "step": jax.ShapeDtypeStruct((), jnp.int32)}
            out = ckpts.restore(like=like)
            assert out["w"].sharding == target, out["w"].sharding
            np.testing.assert_array_equal(out["w"], state["w"])
    # li.save gathers a sharded array into one file; li.load lays it out on the template's sharding
    li.save(sys.argv[1] + ".safetensors", {"w": state["w"]})
    like = {"w": jax.ShapeDtypeStruct((4, 8), jnp.float32, sharding=saved_on)}
    out, _ = li.load(sys.argv[1] + ".safetensors", like=like)
    assert out["w"].sharding == saved_on, out["w"].sharding
    np.testing.assert_array_equal(out["w"], state["w"])
    print("ok")
    """
)


@pytest.mark.slow  # starts a Python process
def test_sharded_arrays_are_restored_onto_their_shardings(tmp_path):
    """On four fake CPU devices, in a subprocess: XLA_FLAGS must be set before JAX starts."""
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu"
    )
    result = subprocess.run(
        [sys.executable, "-c", SHARDED, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_async_saves_are_complete_once_waited_for(tmp_path):
    state, _ = run(fresh_state(), 1)
    with li.TrainingCheckpoints(tmp_path / "run", async_save=True) as ckpts:
        assert ckpts.save(1, state)
        ckpts.wait()
        assert ckpts.steps() == [1]
        restored = ckpts.restore(like=fresh_state())
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        np.testing.assert_array_equal(a, b)


def test_keys_that_would_share_a_path_are_refused_by_name(tmp_path):
    with li.TrainingCheckpoints(tmp_path / "run") as ckpts:
        # 'a/b' and a -> b would both be 'a/b': the placeholder under a -> b would go unseen
        tree = {"a/b": jnp.ones(2), "a": {"b": li.Uninitialized((2,))}}
        with pytest.raises(
            li.errors.InvalidTreeError, match=r"key 'a/b' under '<root>': names must be non-empty"
        ):
            ckpts.save(0, tree)
        with pytest.raises(li.errors.InvalidTreeError, match=r"key '' under 'opt': names must be"):
            ckpts.save(0, {"opt": {"": jnp.ones(2)}})
        ckpts.save(0, {"a": {"b": jnp.ones(2)}})
        with pytest.raises(li.errors.InvalidTreeError, match=r"The like state cannot be addressed"):
            ckpts.restore(like={"a": {"b": jnp.ones(2)}, "c/d": jnp.ones(1)})
        assert ckpts.steps() == [0]


class _Twins:
    """A pytree node that names both of its children 'x'."""

    def __init__(self, a, b):
        self.a, self.b = a, b


jax.tree_util.register_pytree_with_keys(
    _Twins,
    lambda t: (((jax.tree_util.GetAttrKey("x"), t.a), (jax.tree_util.GetAttrKey("x"), t.b)), None),
    lambda _, children: _Twins(*children),
)


def test_two_leaves_at_one_path_are_refused(tmp_path):
    with li.TrainingCheckpoints(tmp_path / "run") as ckpts:
        with pytest.raises(li.errors.InvalidTreeError, match=r"two leaves at one path"):
            ckpts.save(0, {"t": _Twins(jnp.ones(1), li.Uninitialized((1,)))})


# -- issue 13, items 5 and 7 ------------------------------------------------------------------


def test_item7_zero_size_arrays_are_refused_before_orbax_writes(tmp_path):
    with li.TrainingCheckpoints(tmp_path) as ckpts:
        with pytest.raises(
            li.errors.WriteCheckpointError,
            match=r"zero-size arrays with orbax: 'empty' \(shapes \(0, 3\)\)",
        ):
            ckpts.save(1, {"empty": jnp.zeros((0, 3)), "w": jnp.ones(2)})
        assert ckpts.steps() == []
    assert sorted(os.listdir(tmp_path)) == [".lazyinit.lock"]  # no orbax temporary left


def test_item7_keys_1_and_str_1_in_one_dict_are_an_invalid_tree_error(tmp_path):
    with li.TrainingCheckpoints(tmp_path) as ckpts:
        with pytest.raises(
            li.errors.InvalidTreeError, match=r"dict at 'opt' whose keys are of different"
        ):
            ckpts.save(1, {"opt": {1: jnp.ones(2), "1": jnp.ones(2)}})


def _orbax_leftover(directory, step):
    """What a save killed midway leaves, named as orbax names it (tests/checkpoint/test_crash.py makes
    real ones with SIGKILL; orbax creates them in a background thread, so not here)."""
    leftover = os.path.join(directory, f"{step}.orbax-checkpoint-tmp")
    os.makedirs(os.path.join(leftover, "default"))
    with open(os.path.join(leftover, "default", "partial"), "wb") as f:
        f.write(b"\0" * 100)
    return [os.path.basename(leftover)]


def test_item5_opening_the_directory_deletes_killed_saves_temporaries(tmp_path):
    assert _orbax_leftover(tmp_path, 9) == ["9.orbax-checkpoint-tmp"]
    with li.TrainingCheckpoints(tmp_path) as ckpts:
        assert [n for n in os.listdir(tmp_path) if "tmp" in n] == []
        assert ckpts.steps() == []


def test_item5_a_live_writers_directory_is_not_cleaned(tmp_path):
    with li.TrainingCheckpoints(tmp_path):
        leftover = _orbax_leftover(tmp_path, 9)
        with li.TrainingCheckpoints(tmp_path):  # a second writer while the first lives
            assert [n for n in os.listdir(tmp_path) if "tmp" in n] == leftover


def test_item5_keep_is_honoured_when_reopening_after_a_crash(tmp_path):
    state = {"w": jnp.ones(2)}
    with li.TrainingCheckpoints(tmp_path, keep=10) as ckpts:  # as if pruning never ran
        for step in range(7):
            ckpts.save(step, state)
    with li.TrainingCheckpoints(tmp_path, keep=3) as ckpts:
        assert ckpts.steps() == [4, 5, 6]
        assert ckpts.restore(like=state)["w"].shape == (2,)
