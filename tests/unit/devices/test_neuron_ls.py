"""Core-id specs and ranges, neuron-ls JSON (both formats, tolerant parsing), the instance table.

The fixtures in tests/fixtures/neuron are neuron-ls outputs of real instance types.
"""

from __future__ import annotations

import json

import pytest
from device_helpers import FIXTURES

from neuronforge.devices import (
    INSTANCE_CORES,
    cores_per_chip,
    format_core_range,
    parse_core_spec,
    parse_neuron_ls,
    parse_neuron_ls_report,
)

# ---------------------------------------------------------------------------------------------------------------------
# Pure helpers and parsing


def test_core_specs_and_ranges() -> None:
    assert parse_core_spec("3") == (3,)
    assert parse_core_spec("4-7") == (4, 5, 6, 7)
    assert parse_core_spec("0,1, 4-5") == (0, 1, 4, 5)
    for bad in ("", "a-b", "7-4", "1;2"):
        with pytest.raises(ValueError):
            parse_core_spec(bad)
    # One core is a bare index (what the runtime documents); more are always a range, never a comma list.
    assert format_core_range(3, 3) == "3"
    assert format_core_range(4, 7) == "4-7"


def test_parse_json_output_legacy_list() -> None:
    devices = parse_neuron_ls((FIXTURES / "inf2.48xlarge.json-output.json").read_text())
    assert len(devices) == 12
    assert [d.core_ids for d in devices[:2]] == [(0, 1), (2, 3)]
    assert devices[0].memory_bytes == 32 * 1024**3 and devices[0].bdf == "0000:10:1e.0"
    (proc,) = devices[5].processes
    assert (proc.pid, proc.command, proc.core_ids) == (31337, "python serve.py --model llama", ())
    assert devices[5].busy_by() == {31337: (10, 11)}  # a process naming no cores holds its whole device

    (single,) = parse_neuron_ls((FIXTURES / "trn1.2xlarge.json-output.json").read_text())
    assert single.core_ids == (0, 1) and single.processes == ()


def test_parse_output_format_json() -> None:
    report = parse_neuron_ls_report((FIXTURES / "inf2.24xlarge.output-format.json").read_text())
    assert report.instance_type == "inf2.24xlarge"
    assert sum(len(d.core_ids) for d in report.devices) == INSTANCE_CORES["inf2.24xlarge"] == 12
    # The process names its core; neuron-top only watches and is not a user.
    assert report.devices[1].busy_by() == {2222: (3,)}

    # Instance nested, no neuroncore_ids: ids derive from nc_count / LNC (8 physical trn2 cores → 4 logical).
    trn2 = parse_neuron_ls_report((FIXTURES / "trn2.3xlarge.output-format.json").read_text())
    assert trn2.instance_type == "trn2.3xlarge"
    assert trn2.devices[0].core_ids == (0, 1, 2, 3) == tuple(range(INSTANCE_CORES["trn2.3xlarge"]))


def test_parse_is_tolerant_but_not_blind() -> None:
    text = "instance-type: inf2.xlarge\n" + json.dumps([{"neuron_device": 0, "nc_count": "2"}])
    (device,) = parse_neuron_ls(text)
    assert device.core_ids == (0, 1)
    assert parse_neuron_ls("[]") == []
    for garbage in ("no json here", '{"status": "ok"}', "[1, 2"):
        with pytest.raises(ValueError):
            parse_neuron_ls(garbage)


def test_instance_table() -> None:
    assert INSTANCE_CORES["inf2.xlarge"] == INSTANCE_CORES["inf2.8xlarge"] == 2
    assert INSTANCE_CORES["inf2.24xlarge"] == 12 and INSTANCE_CORES["inf2.48xlarge"] == 24
    assert INSTANCE_CORES["trn1.2xlarge"] == 2
    assert INSTANCE_CORES["trn1.32xlarge"] == INSTANCE_CORES["trn1n.32xlarge"] == 32
    assert cores_per_chip("inf2.48xlarge") == cores_per_chip(None) == 2
    assert cores_per_chip("trn2.48xlarge") == 4
