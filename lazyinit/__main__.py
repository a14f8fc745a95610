"""The ``lazyinit`` command line.

``lazyinit demo`` walks PyTorch's lazy-module story in lazyinit.
``lazyinit inspect MODULE:ATTR --input 10x10:float32`` prints the summary of a
model importable from a module (``examples.models:mlp``) or a file
(``examples/models.py:mlp``), abstractly: nothing is allocated. ``ATTR`` may be
a layer, a layer class or a function that returns one (called without
arguments). ``--checkpoint FILE`` also prints whether a checkpoint fits the
model and the memory loading it needs on each device and in each process,
from the file's header alone (:func:`lazyinit.check_checkpoint`), and exits
with 1 if it would not load. Bad input gives a one-line error and a non-zero exit (2 for a bad
command line, 1 for a model that fails to import or trace); ``--debug`` shows
the traceback.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib
import importlib.util
import math
import os
import re
import sys
import traceback
from typing import Any

__all__ = ["main", "parse_input", "load_target"]


class CommandError(Exception):
    """A problem with what the user asked for; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


_INPUT = re.compile(r"^(?P<dims>\d+(?:x\d+)*|scalar)(?::(?P<dtype>[A-Za-z0-9_]+))?$")


def parse_input(text: str) -> Any:
    """``'10x10:float32'`` -> ``jax.ShapeDtypeStruct((10, 10), float32)``; ``scalar:int32`` too."""
    import jax
    import jax.numpy as jnp

    m = _INPUT.match(text.strip())
    if m is None:
        raise CommandError(
            f"--input {text!r}: expected dimensions joined by 'x' and an optional dtype, "
            "such as 10x10:float32, 8x128:int32 or scalar:float32"
        )
    dims = () if m["dims"] == "scalar" else tuple(int(d) for d in m["dims"].split("x"))
    try:
        dtype = jnp.dtype(m["dtype"] or "float32")
    except TypeError as e:
        raise CommandError(f"--input {text!r}: unknown dtype {m['dtype']!r} ({e})") from e
    return jax.ShapeDtypeStruct(dims, dtype)


def _parse_kw(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise CommandError(f"--kw {text!r}: expected NAME=VALUE, such as train=False")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def _import(module: str) -> Any:
    if module.endswith(".py") or os.sep in module or "/" in module:
        path = os.path.abspath(module)
        if not os.path.isfile(path):
            raise CommandError(f"no such file: {module!r}")
        name = "_lazyinit_target_" + re.sub(r"\W", "_", os.path.splitext(path)[0])
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise CommandError(f"{module!r} cannot be imported as a Python file")
        mod = importlib.util.module_from_spec(spec)
        sys.path.insert(0, os.path.dirname(path))
        sys.modules[name] = mod
        try:
            spec.loader.exec_module(mod)
        except Exception as e:
            del sys.modules[name]
            raise CommandError(f"importing {module!r} failed: {type(e).__name__}: {e}", 1) from e
        return mod
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):
            raise CommandError(
                f"cannot import {module!r}: {e}. Give a module on the Python path "
                "(examples.models) or a file (examples/models.py)"
            ) from e
        raise CommandError(f"importing {module!r} failed: {type(e).__name__}: {e}", 1) from e
    except Exception as e:
        raise CommandError(f"importing {module!r} failed: {type(e).__name__}: {e}", 1) from e


def load_target(target: str) -> Any:
    """The model named by ``MODULE:ATTR``: a layer, or a layer class or factory, called."""
    from ._layer import Layer

    module, sep, attr = target.rpartition(":")
    if not sep or not module or not attr:
        raise CommandError(
            f"{target!r}: expected MODULE:ATTR, such as examples.models:mlp or "
            "examples/models.py:mlp"
        )
    obj = _import(module)
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise CommandError(f"{module!r} has no attribute {part!r}{hint}")
        obj = getattr(obj, part)
    if isinstance(obj, Layer):
        return obj
    if callable(obj):
        try:
            made = obj()
        except Exception as e:
            raise CommandError(
                f"{target} could not be called without arguments to build a model: "
                f"{type(e).__name__}: {e}",
                1,
            ) from e
        if isinstance(made, Layer):
            return made
        obj = made
    raise CommandError(
        f"{target} is an object of type {type(obj).__name__}, not a lazyinit model: name a li.Layer, a Layer "
        "class or a function that returns one"
    )


def _one_line(message: str) -> str:
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())


def _inspect(args: argparse.Namespace) -> int:
    import lazyinit as li

    inputs = [parse_input(t) for t in args.input]
    kwargs = dict(_parse_kw(t) for t in args.kw)
    if args.dtype is not None:
        try:
            import jax.numpy as jnp

            jnp.dtype(args.dtype)
        except TypeError as e:
            raise CommandError(f"--dtype {args.dtype!r}: {e}") from e
    model = load_target(args.target)
    try:
        s = li.summary(model, *inputs, dtype=args.dtype, depth=args.depth, **kwargs)
        described = li.describe(model, *inputs, **kwargs) if args.repr else None
    except Exception as e:
        shapes = ", ".join(f"{i.dtype}[{','.join(map(str, i.shape))}]" for i in inputs)
        raise CommandError(
            f"tracing {args.target} on ({shapes}) failed: {type(e).__name__}: {e}", 1
        ) from e
    if sys.stdout.isatty():
        from rich.console import Console

        Console().print(s)
    else:
        print(s)
    if described is not None:
        print()
        print(described)
    if args.checkpoint is not None:
        return _check_checkpoint(args, model, inputs, kwargs)
    return 0


def _check_checkpoint(args: argparse.Namespace, model: Any, inputs: list, kwargs: dict) -> int:
    import lazyinit as li

    try:
        report = li.check_checkpoint(
            args.checkpoint, model, *inputs, strict=not args.non_strict, **kwargs
        )
    except (li.errors.LazyInitError, OSError) as e:
        raise CommandError(f"--checkpoint {args.checkpoint!r}: {e}", 1) from e
    print()
    verdict = "loads" if report.ok else "does not load"
    print(f"Checkpoint {args.checkpoint}: {verdict} into this model (header checked)")
    for name in ("loaded", "initialized", "kept", "missing", "unexpected", "cast"):
        paths = getattr(report, name)
        print(f"  {name} ({len(paths)}): {', '.join(paths) or '-'}")
    print(f"  mismatched ({len(report.mismatched)}):")
    for line in report.mismatched:
        print(f"    {line}")
    print("  memory the load needs:")
    for name, sizes in (
        ("per device (its arrays)", report.device_bytes),
        ("per process (host, at its peak)", report.process_bytes),
    ):
        print(f"    {name}: {', '.join(f'{k} {_size(n)}' for k, n in sizes.items()) or '-'}")
    return 0 if report.ok else 1


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    exponent = min(3, int(math.log(n, 1024)))
    return f"{n / 1024**exponent:.1f} {('KiB', 'MiB', 'GiB')[exponent - 1]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lazyinit",  # plain text: argparse prints the description as it is, not as RST
        description="The lazyinit command line: a demo of lazy modules in JAX, and "
        "abstract summaries of models, layer by layer.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="walk PyTorch's lazy-module story in lazyinit")
    inspect = commands.add_parser(
        "inspect",
        help="print the summary of a model, abstractly",
        description="Print a model's per-layer summary, traced on abstract inputs.",
    )
    inspect.add_argument(
        "target", help="MODULE:ATTR (examples.models:mlp, or a file: examples/models.py:mlp)"
    )
    inspect.add_argument(
        "--input",
        "-i",
        action="append",
        default=[],
        metavar="SHAPE[:DTYPE]",
        help="a positional input, e.g. 10x10:float32 or 8x128:int32 (repeat for several)",
    )
    inspect.add_argument(
        "--kw", action="append", default=[], metavar="NAME=VALUE", help="a keyword input"
    )
    inspect.add_argument("--dtype", help="count parameter bytes in this dtype (e.g. bfloat16)")
    inspect.add_argument("--depth", type=int, help="show layers down to this path depth")
    inspect.add_argument(
        "--repr", action="store_true", help="also print the model with its inferred sizes"
    )
    inspect.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="also check that a li.save checkpoint fits the model and print the memory loading "
        "it needs, reading only its header (exit status 1 if it would not load)",
    )
    inspect.add_argument(
        "--non-strict",
        action="store_true",
        help="with --checkpoint: missing and unexpected paths do not fail the check",
    )
    inspect.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import main as demo

        demo()
        return 0
    try:
        return _inspect(args)
    except BrokenPipeError:  # the reader (`| head`) went away: not an error of ours
        sys.stderr.close()
        return 0
    except CommandError as e:
        if args.debug:
            traceback.print_exc()
        print(f"lazyinit inspect: error: {_one_line(str(e))}", file=sys.stderr)
        return e.code
    except Exception as e:  # a bug of ours or of the model's module: still one line
        if args.debug:
            traceback.print_exc()
        print(f"lazyinit inspect: error: {type(e).__name__}: {_one_line(str(e))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
