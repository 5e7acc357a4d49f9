"""``python -m callroom``: the same command as the ``callroom`` console script."""

from callroom.cli import main

main()
