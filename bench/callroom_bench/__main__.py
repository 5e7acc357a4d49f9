"""``python -m callroom_bench``: the same command as ``callroom-bench``."""

from callroom_bench.cli import main

main()
