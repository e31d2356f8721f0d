"""Speed benchmarks of llkd (selection kernels, teacher throughput).

Each is a script with a ``--quick`` mode, run as ``python benchmarks/NAME.py``. This file
makes ``benchmarks`` a package so that the accuracy studies in ``experiments/`` can share
``benchmarks._results_md`` (the writer of ``benchmarks/RESULTS.md``).
"""
