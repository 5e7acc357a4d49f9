"""``python -m callroom.bench``: the bench CLI without the main ``callroom`` command."""

from callroom.bench.cli import bench_app

bench_app(prog_name="callroom bench")
