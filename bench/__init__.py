"""neuronforge benchmarks: the pipeline's own code paths against plain library baselines, in one run.

`make bench` (or `.venv/bin/python -m bench`) prints a table and writes bench/out/results.json, ratios.png and
scaling.png. Every figure is a ratio against a baseline measured in the same process on the same inputs, with
contenders alternated round by round (see bench.harness); each row has a target and a pass/miss verdict.

Sections: dense and sparse encoding (bench.encoders), sparse search (bench.search), chat generation (bench.chat),
scaling with corpus size (bench.scaling) and Dagster orchestration overhead (bench.pipeline).
"""
