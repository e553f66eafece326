"""Neuron artifacts that optimum-neuron's own loaders open straight from a Hub id.

- dense: `NeuronSentenceTransformers.from_pretrained("<org>/<repo>")` lists the repo's `*.neuron` files and downloads
  the one it finds (optimum/neuron/modeling_traced.py:190-243): the export's single model.neuron at the root works.
- sparse: `torch.jit.load` of the repo's model.neuron, with the artifact's own tokenizer files beside it.
- chat: `NeuronModelForCausalLM.from_pretrained("<org>/<repo>")` downloads only model.pt, then fetches weights solely
  from `neuron_config.checkpoint_id` (models/inference/backend/pretrained_model.py:413-442, 238-251), and a
  local-folder export records no checkpoint_id (modeling_utils.py:93-95). So the published repo names itself as the
  checkpoint (`checkpoint_id` = the repo, `checkpoint_revision` = the build's tag), and the rank checkpoints sit at
  `weights/tp{rank}_sharded_checkpoint.safetensors` at the root, where `_load_weights_from_path` finds them both in
  that Hub snapshot and in a local copy of the repo (pretrained_model.py:191-201, 226-236).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from neuronforge.artifacts import MANIFEST, json_bytes

NEURON_CONFIG = "neuron_config.json"  # optimum-neuron's NEURON_CONFIG_FILE (models/inference/backend/config.py:23)
CHECKPOINT_DIR = "checkpoint"  # NxDPreTrainedModel.CHECKPOINT_DIR: where save_pretrained shards the weights
WEIGHTS_DIR = "weights"  # get_shards_path(): the folder of rank checkpoints inside a checkpoint path


def hub_loadable_layout(out_dir: Path) -> None:
    """Move a decoder export's rank checkpoints from checkpoint/weights/ to weights/ at the artifact's root."""
    out_dir = Path(out_dir)
    sharded = out_dir / CHECKPOINT_DIR / WEIGHTS_DIR
    if not sharded.is_dir():
        raise RuntimeError(
            f"{out_dir}: optimum-neuron's save_pretrained wrote no {CHECKPOINT_DIR}/{WEIGHTS_DIR}/ rank checkpoints; "
            "the export cannot be loaded without its weights"
        )
    shutil.move(str(sharded), str(out_dir / WEIGHTS_DIR))
    shutil.rmtree(out_dir / CHECKPOINT_DIR)


def hub_files(artifact_dir: Path, manifest: dict[str, Any], *, repo_id: str, revision: str) -> dict[str, bytes]:
    """Files that differ in the published repo: for a Neuron chat artifact, neuron_config.json naming the repo and
    revision as its checkpoint, and the manifest with that file's sha256. Other artifacts publish as they are."""
    if manifest.get("backend") != "neuron" or manifest.get("kind") != "chat":
        return {}
    config = json.loads((Path(artifact_dir) / NEURON_CONFIG).read_text())
    config = {**config, "checkpoint_id": repo_id, "checkpoint_revision": revision}
    data = json_bytes(config)
    published = {**manifest, "files": {**manifest["files"], NEURON_CONFIG: hashlib.sha256(data).hexdigest()}}
    return {NEURON_CONFIG: data, MANIFEST: json_bytes(published)}
