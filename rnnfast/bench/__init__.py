"""rnnfast's benchmark tool, apart from the library: ``python -m rnnfast.bench`` (CPU or
GPU, against torch.nn and hand-written loops) and ``python -m rnnfast.bench.cuda`` (the GPU
benchmark with its compute floor).

- ``cli``: the command line and the run; ``modes``: what ``--quick``, the default and
  ``--full`` run; ``runner``: the cases' timing; ``measure``: the timers and meters;
- ``cases``, ``modules``: the benchmark cases, shared with ``benchmarks/``;
  ``baselines``: the hand-written loops compared against;
- ``tables``, ``summary``, ``report``: the report as text, as a short summary, as a plot
  and as a comparison with an earlier run.
"""
