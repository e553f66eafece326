"""neuronforge: shared library code (registry, artifacts, index, chat, hub server) used by the Dagster assets."""
