"""``callroom-bench``: a load generator and the scenarios of docs/performance.md.

One process drives thousands of picows connections against callroom or a reference
server of ``bench/peers`` (bare picows relay, python-socketio, Node ``ws``), so every
ratio comes from the same generator in the same run. A project of its own beside the
peers (bench/pyproject.toml): the ``callroom`` wheel does not contain it and
``callroom serve`` never imports it.
"""
