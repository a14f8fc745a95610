"""Crash safety: a process SIGKILLed at random points of large saves never loses the previous checkpoint.

One helper process imports lazyinit once, then forks a writer per round. Each
writer saves version 1, 2, 3... of a large tree over the same file with
``overwrite=True``, appending each finished version to a progress file, until
the helper SIGKILLs it at a random moment. Afterwards every round's file must
load and equal a version that was saved: the last finished one, or the one in
flight if its rename had already happened. Never an error, never a mix.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import lazyinit as li

pytestmark = pytest.mark.slow  # starts Python processes

ROUNDS = 10
SIZE = 1 << 20  # float32 elements per version: 4 MiB

HELPER = textwrap.dedent(
    """
    import os, random, signal, sys, time
    import numpy as np
    import lazyinit as li

    folder, rounds, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

    def version(k):
        return {
            "w": np.full(size, k, np.float32),
            "layer": {"step": np.asarray(k, np.int32), "lazy": li.Uninitialized((None, 3), "bfloat16")},
        }

    rng = random.Random(0)
    for r in range(rounds):
        path = os.path.join(folder, f"round{r}.safetensors")
        li.save(path, version(0))  # the checkpoint that must survive
        pid = os.fork()
        if pid == 0:
            with open(os.path.join(folder, f"round{r}.progress"), "a") as progress:
                k = 1
                while True:
                    li.save(path, version(k), overwrite=True)
                    progress.write(f"{k}\\n")
                    progress.flush()
                    k += 1
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    print("done")
    """
)


def test_sigkill_during_saves_never_loses_the_previous_checkpoint(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", HELPER, str(tmp_path), str(ROUNDS), str(SIZE)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    assert result.returncode == 0 and result.stdout.strip() == "done", result.stderr[-3000:]
    for r in range(ROUNDS):
        progress = tmp_path / f"round{r}.progress"
        done = progress.read_text().split() if progress.exists() else []
        last = int(done[-1]) if done else 0
        tree, _ = li.load(tmp_path / f"round{r}.safetensors")
        k = int(tree["layer"]["step"])
        assert k in (last, last + 1), (r, k, last)
        assert tree["layer"]["lazy"] == li.Uninitialized((None, 3), "bfloat16")
        np.testing.assert_array_equal(tree["w"], np.full(SIZE, k, np.float32))
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert all(name.startswith(".round") for name in leftovers)  # named as documented, ignored
    for r in range(ROUNDS):  # the next save of each file deletes what killed saves left
        li.save(tmp_path / f"round{r}.safetensors", {"w": np.ones(1)}, overwrite=True)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


TRAINER = textwrap.dedent(
    """
    import sys
    import jax.numpy as jnp
    import lazyinit as li

    ckpts = li.TrainingCheckpoints(sys.argv[1], keep=2)
    step = 0
    while True:
        step += 1
        ckpts.save(step, {"w": jnp.full((512, 512), step, jnp.float32), "step": jnp.asarray(step)})
        print(step, flush=True)
    """
)


def test_sigkill_during_training_checkpoint_saves_leaves_nothing_after_reopening(tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", TRAINER, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    try:
        done = [int(child.stdout.readline() or 0) for _ in range(3)]  # three steps finished
    finally:
        child.kill()  # SIGKILL, most likely in the middle of step 4's save
        child.wait()
        child.stdout.close()
    assert done == [1, 2, 3]
    with li.TrainingCheckpoints(tmp_path, keep=2) as ckpts:
        assert [n for n in os.listdir(tmp_path) if "tmp" in n] == []
        steps = ckpts.steps()
        assert len(steps) == 2 and steps[-1] >= 3
        state = ckpts.restore(like={"w": np.zeros((512, 512), np.float32), "step": np.int32(0)})
        assert int(state["step"]) == steps[-1] and float(state["w"][0, 0]) == steps[-1]
