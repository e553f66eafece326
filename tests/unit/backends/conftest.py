"""The stand-in Neuron SDK for the backend tests (tests/neuron_stub.py)."""

from neuron_stub import neuron_sdk_stub, no_neuron_sdk, stub_root  # noqa: F401  (pytest fixtures)
