"""Routes of the Git LFS batch API: batch (which objects to upload), the pre-signed upload PUT, verify."""

from __future__ import annotations

from typing import Any

from neuronforge.hub.handler import BaseHandler
from neuronforge.hub.store import DISK_RESERVE_BYTES, disk_full_error
from neuronforge.hub.validation import SHA256_RE, HubError


class LfsRoutes(BaseHandler):
    """The handlers of LFS batch, upload and verify."""

    def _lfs_batch(self, repo_id: str) -> None:
        self._authorize(write=True)
        body = self._read_json()
        self.store.repo_meta(repo_id)
        if not isinstance(body, dict) or body.get("operation") != "upload":
            raise HubError(400, "Only the LFS 'upload' operation is supported; download files via /resolve/.")
        if body.get("hash_algo", "sha256") != "sha256":
            raise HubError(400, "Only sha256 LFS objects are supported.")
        objects = body.get("objects")
        if not isinstance(objects, list):
            raise HubError(400, "Expected an 'objects' list.")
        answer = []
        budget = self.store.free_bytes() - DISK_RESERVE_BYTES  # what this batch's uploads may still fill
        for obj in objects:
            oid = obj.get("oid") if isinstance(obj, dict) else None
            size = obj.get("size") if isinstance(obj, dict) else None
            if not isinstance(oid, str) or not SHA256_RE.fullmatch(oid) or not isinstance(size, int) or size < 0:
                raise HubError(400, "Each LFS object needs a sha256 'oid' and a non-negative integer 'size'.")
            row: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if size > self.hub.max_upload_bytes:
                message = f"Object is {size} bytes; this hub accepts at most {self.hub.max_upload_bytes} per file"
                row["error"] = {"code": 413, "message": message + " (restart it with a larger --max-upload-bytes)."}
            elif self.store.has_blob(repo_id, oid, size):  # already stored → no actions → client skips the PUT
                pass
            elif size > budget:  # refused before the client sends it, and not retried: a clear 413 naming the space
                # "free" as this object would find it: after the uploads granted above in this batch
                row["error"] = {"code": 413, "message": disk_full_error(budget + DISK_RESERVE_BYTES, size).message}
            else:
                budget -= size
                row["actions"] = {
                    "upload": {"href": self.hub.signed_upload_url(repo_id, oid, size), "header": {}},
                    "verify": {"href": f"{self.hub.url}/{repo_id}.git/info/lfs/objects/verify", "header": {}},
                }
            answer.append(row)
        self._send_json({"transfer": "basic", "objects": answer, "hash_algo": "sha256"})

    def _lfs_upload(self, repo_id: str, oid: str, size_text: str) -> None:
        # The client PUTs without its Authorization header (upload URLs are pre-signed, as S3's are on the Hub).
        if not size_text.isdigit():
            raise HubError(400, "Invalid upload size.")
        size = int(size_text)
        self.hub.check_upload_signature(repo_id, oid, size, self.query)
        self.store.repo_meta(repo_id)
        if size > self.hub.max_upload_bytes:
            raise HubError(413, f"Object exceeds this hub's limit of {self.hub.max_upload_bytes} bytes.")
        self.store.check_space(size)
        chunks = self._iter_body(self.hub.max_upload_bytes, "--max-upload-bytes")
        self.store.put_blob_stream(repo_id, chunks, sha256=oid, size=size)
        self._send_json({})

    def _lfs_verify(self, repo_id: str) -> None:
        self._authorize(write=True)
        body = self._read_json()
        oid = body.get("oid") if isinstance(body, dict) else None
        size = body.get("size") if isinstance(body, dict) else None
        if not isinstance(oid, str) or not isinstance(size, int):
            raise HubError(400, "Expected 'oid' and 'size'.")
        if not self.store.has_blob(repo_id, oid, size):
            raise HubError(404, f"LFS object sha256:{oid} ({size} bytes) is not stored; upload it again.")
        self._send_json({})
