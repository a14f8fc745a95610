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

import lazyinit as li

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
