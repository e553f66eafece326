"""Routes for the account and repos: whoami, create/delete a repo, validate a model card's YAML, model info."""

from __future__ import annotations

from typing import Any

from neuronforge.hub.card import CardError, card_tags, front_matter
from neuronforge.hub.handler import DEFAULT_USER, BaseHandler, bool_param
from neuronforge.hub.objects import Entry, lfs_pointer
from neuronforge.hub.validation import HubError, validate_repo_id


class RepoRoutes(BaseHandler):
    """The handlers of whoami, repos/create|delete, validate-yaml and model info."""

    def _whoami(self) -> None:
        if self.hub.token is not None:
            self._authorize(write=True)  # whoami is how clients test a token: require one
        self._send_json(
            {
                "type": "user",
                "id": DEFAULT_USER,
                "name": DEFAULT_USER,
                "fullname": "neuronforge local hub",
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": "write"}},
            }
        )

    def _repo_id_from_body(self, body: Any) -> str:
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise HubError(400, "Expected a JSON object with 'name' (and optionally 'organization').")
        if body.get("type", "model") not in ("model", None):
            raise HubError(400, "This hub only hosts model repositories (type 'model').")
        organization = body.get("organization") or DEFAULT_USER
        if not isinstance(organization, str):
            raise HubError(400, "'organization' must be a string.")
        return validate_repo_id(f"{organization}/{body['name']}")

    def _create_repo(self) -> None:
        self._authorize(write=True)
        body = self._read_json()
        repo_id = self._repo_id_from_body(body)
        url = f"{self.hub.url}/{repo_id}"
        if not self.store.create_repo(repo_id, private=bool(body.get("private")), author=DEFAULT_USER):
            # create_repo(exist_ok=True) treats 409 as success; the Hub's body also carries the url.
            message = "You already created this model repo"
            return self._send_json({"error": message, "url": url}, 409, {"X-Error-Message": message})
        self._send_json({"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self) -> None:
        self._authorize(write=True)
        self.store.delete_repo(self._repo_id_from_body(self._read_json()))
        self._send_json({})

    def _validate_yaml(self) -> None:
        body = self._read_json()
        content = body.get("content") if isinstance(body, dict) else None
        if not isinstance(content, str):
            raise HubError(400, "Expected a JSON object with 'content'.")
        try:
            front_matter(content.encode("utf-8", "replace"))
        except CardError as exc:
            # huggingface_hub turns `errors` into "Invalid metadata in README.md" before uploading anything.
            message = " ".join(f"Invalid YAML metadata in the model card: {exc}".split())
            return self._send_json(
                {"error": message, "errors": [{"message": message}], "warnings": []}, 400, {"X-Error-Message": message}
            )
        self._send_json({"errors": [], "warnings": []})

    def _model_info(self, repo_id: str, revision: str | None) -> None:
        meta = self._authorize_read(repo_id)
        sha = self.store.resolve(repo_id, revision or "main")
        commit = self.store.commit(repo_id, sha)
        tree = {p: Entry.from_json(raw) for p, raw in commit["tree"].items()}
        blobs = bool_param(self.query.get("blobs"))
        siblings = []
        for path, entry in sorted(tree.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=entry.size, blobId=entry.oid)
                if entry.lfs:
                    pointer = len(lfs_pointer(entry.sha256, entry.size))
                    sibling["lfs"] = {"sha256": entry.sha256, "size": entry.size, "pointerSize": pointer}
            siblings.append(sibling)
        card: dict[str, Any] | None = None
        if "README.md" in tree:
            try:
                card = front_matter(self.store.blob_path(repo_id, tree["README.md"].sha256).read_bytes())
            except CardError:
                card = None  # a broken card must not break model_info (and with it every download)
        tags = card_tags(card)
        payload: dict[str, Any] = {
            "_id": repo_id,
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0],
            "sha": sha,
            "lastModified": commit["date"],
            "createdAt": meta["createdAt"],
            "private": bool(meta.get("private")),
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": tags,
            "siblings": siblings,
        }
        if card is not None:
            payload["cardData"] = card
            for key in ("library_name", "pipeline_tag"):
                if isinstance(card.get(key), str):
                    payload[key] = card[key]
        self._send_json(payload)
