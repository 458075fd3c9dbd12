"""Benchmarks: what each one measures, and the command that runs it (figures: docs/benchmarks.md).

    vre bench RECIPE VIDEO                     pipeline.py  per-stage throughput, peak memory
    python -m video_pipeline.bench.gpu ...     gpu.py       pipeline vs bare model on a GPU, NVML busy
    python -m video_pipeline.bench.loader      loader.py    DataLoader samples/s over a store
    python -m video_pipeline.bench.export      export.py    Dronescapes export against a numpy loop
    python -m video_pipeline.bench.ensemble    ensemble.py  `vre ensemble` frames/s for several K
synthetic.py makes their inputs (a store with realistic content, a random PHG-MAE checkpoint).
Library modules never import this package.
"""
