"""Profiles of lazyinit's side of a figure: ``python -m benchmarks.profile WHAT [--model M]``.

``WHAT`` is ``later`` (a dry run with a new key, figure 4), ``jit-later`` (the same with
``jit=True``), ``abstract`` (a first abstract dry run, figure 3), ``repeat`` (a repeated abstract
dry run), ``llama`` (the LLaMA-7B plan, figure 8d) or ``apply`` (an eager apply, figure 6). It
warms the path up, then prints a pyinstrument profile of ``--calls`` calls.
"""

from __future__ import annotations

import argparse

import jax
from pyinstrument import Profiler

import lazyinit as li

from . import common
from .registry import build


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument(
        "what", choices=["later", "jit-later", "abstract", "repeat", "llama", "apply"]
    )
    parser.add_argument("--model", default="gpt", choices=common.MODELS)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = common.QUICK if args.quick else common.FULL
    impl = build("lazyinit", args.model, sizes)
    x, _ = common.batch(args.model, sizes)
    key = jax.random.key(0)
    if args.what == "later":
        fn = impl.init
    elif args.what == "jit-later":
        fn = impl.jit_init()
    elif args.what == "abstract":

        def fn(k):
            return impl.abstract_init()(k)
    elif args.what == "repeat":
        fn = impl.abstract_init()
    elif args.what == "llama":
        from .models_lazyinit import llama_abstract

        shape = common.LLAMA_QUICK if args.quick else common.LLAMA_7B

        def fn(k):
            return llama_abstract(shape, common.llama_tokens(args.quick))(k)
    else:
        variables = impl.init(key)

        def fn(k):
            return impl.apply(variables, x)

    jax.block_until_ready(fn(key))
    profiler = Profiler(interval=0.0001)
    profiler.start()
    for i in range(args.calls):
        jax.block_until_ready(fn(jax.random.key(i + 1)))
    profiler.stop()
    print(profiler.output_text(unicode=False, color=False))
    li.clear_cache()


if __name__ == "__main__":
    main()
