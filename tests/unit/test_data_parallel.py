"""Data-parallel encoding on a simulated Neuron host: one worker process per replica, each starting its own runtime on
its own cores; shards from a queue; the same shards, byte for byte, as one worker; a killed worker's shard re-queued."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from dp_helpers import CrashingOnce, Failing
from transformers import AutoTokenizer

from neuronforge.corpus import iter_documents
from neuronforge.data_parallel import (
    Replica,
    ShardEncodeError,
    encode_corpus_shards,
    encode_shards_parallel,
    replica_request,
)
from neuronforge.devices import CoreAllocator, end_process_leases
from neuronforge.devices.simulated_runtime import SimulatedNeuronHost, SimulatedShardEncoder
from neuronforge.shards import SHARD_LIST, plan_shards, read_shards


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return AutoTokenizer.from_pretrained(minilm_dir)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for f in range(3):
        lines = [
            json.dumps({"_id": f"f{f}-{i}", "text": f"document {i} of file {f}. " * (5 + i % 7)}) for i in range(30)
        ]
        (folder / f"part{f}.jsonl").write_text("\n".join(lines))
    return folder


def shards_of(corpus: Path, tokenizer):
    return plan_shards(iter_documents(corpus), tokenizer, 64, 8, shard_chunks=6)


def listing(out: Path) -> dict:
    return json.loads((out / SHARD_LIST).read_text())


def test_replicas_give_what_one_worker_gives(tmp_path: Path, corpus: Path, tokenizer) -> None:
    # One worker: the reference.
    one_host = SimulatedNeuronHost(tmp_path / "rt-one", 8, core_latency_s=0.005)
    replica = Replica(0, {"NEURON_RT_VISIBLE_CORES": "0-1"}, "0-1")
    one = encode_shards_parallel(
        shards_of(corpus, tokenizer), tmp_path / "one", "k", SimulatedShardEncoder(one_host), [replica]
    )
    # Four replicas of a tp=2 model over a lease of the whole simulated host.
    host = SimulatedNeuronHost(tmp_path / "rt", 8, core_latency_s=0.005)
    allocator = CoreAllocator(total_cores=8, lock_dir=tmp_path / "locks")
    run, lease = encode_corpus_shards(
        shards_of(corpus, tokenizer),
        tmp_path / "four",
        "k",
        SimulatedShardEncoder(host),
        allocator=allocator,
        holder="embeddings",
        cores_per_replica=2,
        data_parallel="auto",
        pool_slots=1,
        log=logging.getLogger("test"),
        start_when_ready=True,  # every replica gets work however loaded the machine is (one may load late)
    )
    assert (lease.cores, lease.scope, len(run.replicas)) == ("0-7", "children", 4)
    assert [r["cores"] for r in run.replicas] == ["0-1", "2-3", "4-5", "6-7"]
    assert sum(r["shards"] for r in run.replicas) == len(run.shards) > 8 and all(r["shards"] for r in run.replicas)
    # Each worker started its own runtime on its own cores, none found them taken.
    inits = host.history()
    assert sorted(cores for _, cores in inits) == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert len({pid for pid, _ in inits}) == 4
    # The same shards in the same order, the same bytes.
    assert listing(tmp_path / "four")["files"] == listing(tmp_path / "one")["files"]
    assert run.shards == one.shards and run.chunks == one.chunks == read_shards(tmp_path / "four").num_rows
    # The lease ended with the workers: the whole host is free again.
    with allocator.lease(8, holder="after", scope="children") as after:
        assert after.cores == "0-7"

    # Resume: nothing left to encode.
    again, _ = encode_corpus_shards(
        shards_of(corpus, tokenizer),
        tmp_path / "four",
        "k",
        SimulatedShardEncoder(host),
        allocator=allocator,
        holder="again",
        cores_per_replica=2,
        data_parallel=2,
    )
    assert (again.reused, again.encoded_chunks, len(again.replicas)) == (len(run.shards), 0, 2)


def test_a_killed_worker_gives_its_shard_back(tmp_path: Path, corpus: Path, tokenizer, caplog) -> None:
    host = SimulatedNeuronHost(tmp_path / "rt", 4)
    replicas = [Replica(i, {"NEURON_RT_VISIBLE_CORES": str(i)}, str(i)) for i in range(2)]
    reference = encode_shards_parallel(
        shards_of(corpus, tokenizer),
        tmp_path / "ref",
        "k",
        SimulatedShardEncoder(SimulatedNeuronHost(tmp_path / "r0", 4)),
        replicas[:1],
    )
    marker = tmp_path / "crashed"
    factory = CrashingOnce(host, chunk_id="f1-3#0", marker=str(marker))
    with caplog.at_level(logging.WARNING):
        run = encode_shards_parallel(shards_of(corpus, tokenizer), tmp_path / "out", "k", factory, replicas)
    assert marker.exists() and "died (exit code -9) on shard-" in caplog.text
    assert sum(r["restarts"] for r in run.replicas) == 1
    crashed = next(r for r in run.replicas if r["restarts"])
    assert int(marker.read_text()) == crashed["pids"][0]  # the worker that died is the one restarted
    # A restarted worker that got to load started its runtime on the dead one's core: its reservation died with it.
    restarted_inits = [cores for _, cores in host.history()].count((crashed["replica"],))
    assert restarted_inits == len(crashed["pids"]) and not any(r.get("error") for r in run.replicas)
    assert listing(tmp_path / "out")["files"] == listing(tmp_path / "ref")["files"]
    assert run.shards == reference.shards


def test_an_encoder_error_fails_the_stage_at_once(tmp_path: Path, corpus: Path, tokenizer) -> None:
    replicas = [Replica(i, {"NEURON_RT_VISIBLE_CORES": str(i)}, str(i)) for i in range(2)]
    with pytest.raises(ShardEncodeError, match=r"(?s)failed encoding shard-.*ValueError: cannot encode f\d+-\d+#0"):
        encode_shards_parallel(
            shards_of(corpus, tokenizer),
            tmp_path / "out",
            "k",
            Failing(SimulatedNeuronHost(tmp_path / "rt", 2)),
            replicas,
        )
    assert not (tmp_path / "out" / SHARD_LIST).exists()


def test_auto_takes_a_fair_share_in_whole_replicas() -> None:
    # inf2.48xlarge, neuron pool of 2: up to 12 cores (12 replicas of a 1-core model, 6 of a tp=2 one, 2 of tp=5).
    assert replica_request("auto", "neuron", 1, 24, 2, 2)[:2] == (1, 12)
    assert replica_request("auto", "neuron", 2, 24, 2, 2)[:2] == (2, 12)
    assert replica_request("auto", "neuron", 5, 24, 2, 2)[:2] == (5, 10)
    assert replica_request("auto", "neuron", 16, 24, 2, 2)[:2] == (16, 16)  # at least one replica, always
    assert replica_request("auto", "neuron", 1, 24, 0, 2)[:2] == (1, 24)  # unknown pool limit: the host
    assert replica_request(3, "neuron", 2, 24, 2, 2) == (6, 6, 3)  # exactly N replicas
    assert replica_request("auto", "cpu", 1, 2, 2, 2).cpu_workers == 1


def test_in_process_replica_keeps_the_lease_until_exit(tmp_path: Path, corpus: Path, tokenizer) -> None:
    host = SimulatedNeuronHost(tmp_path / "rt", 4)
    allocator = CoreAllocator(total_cores=4, lock_dir=tmp_path / "locks", wait_timeout_s=0)
    try:
        run, lease = encode_corpus_shards(
            shards_of(corpus, tokenizer),
            tmp_path / "out",
            "k",
            SimulatedShardEncoder(host),
            allocator=allocator,
            holder="single",
            data_parallel=1,
        )
        assert (lease.cores, lease.held_until, run.replicas[0]["cores"]) == ("0", "process exit", "0")
        assert host.live_owners() == {0: __import__("os").getpid()}  # this process's runtime holds core 0
        with allocator.lease(1, holder="all", scope="children", up_to=4) as rest:
            assert rest.cores == "1-3"
    finally:
        end_process_leases()
