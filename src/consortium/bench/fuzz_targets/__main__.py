"""``python -m consortium.bench.fuzz_targets TARGET [libFuzzer arguments...]``: fuzz one target with atheris.

The target's module and everything of ``consortium`` it imports are instrumented for coverage; the
arguments after the target's name go to libFuzzer (corpus directories, ``-max_total_time``,
``-rss_limit_mb``, ``-timeout``...). `consortium bench atheris` runs this once per target.
"""

from __future__ import annotations

import os
import sys

SELF_ENV = "CONSORTIUM_FUZZ_SELF"


def main() -> None:
    import atheris

    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m consortium.bench.fuzz_targets TARGET [libFuzzer arguments...]")
    name = sys.argv[1]
    with atheris.instrument_imports(include=["consortium"]):
        from consortium.bench.fuzz_targets import load

        target = load(name)
    # libFuzzer's -merge=1 runs argv[0] again: the runner names an executable wrapper of this command.
    atheris.Setup([os.environ.get(SELF_ENV, sys.argv[0]), *sys.argv[2:]], target.check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
