"""HubResource: where and how artifacts are published, as Dagster configuration over `neuronforge.publish`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field, field_validator

from neuronforge.hub.daemon import TOKEN_ENV as EMBEDDED_TOKEN_ENV
from neuronforge.publish import (
    DEFAULT_BACKOFF_S,
    DEFAULT_MAX_RETRIES,
    DEFAULT_ORGANIZATION,
    DEFAULT_REPO_TEMPLATE,
    TEMPLATE_KEYS,
    TOKEN_ENV,
    Publisher,
    PublishResult,
    check_endpoint,
    check_non_negative,
    check_organization,
    check_repo_template,
)

if TYPE_CHECKING:
    from huggingface_hub import HfApi


class HubResource(dg.ConfigurableResource):
    """Where and how artifacts are published.

    Leave `endpoint` unset to publish to the embedded hub (a loopback server over the project's data dir, started on
    first use); set it to https://huggingface.co (with `token` from HF_TOKEN) or any Hub-compatible endpoint.
    """

    endpoint: str | None = Field(
        default=None, description="Hub URL, e.g. https://huggingface.co; unset: the embedded loopback hub."
    )
    # Unset → read the variable at call time. dg.EnvVar("HF_TOKEN") would fail every run where the variable is unset,
    # including the zero-config embedded hub, which needs no token.
    token: str | None = Field(
        default=None,
        repr=False,
        description=f"Write token; unset: {EMBEDDED_TOKEN_ENV} for the embedded hub (the token it was started with), "
        f"else the {TOKEN_ENV} variable.",
    )
    organization: str = Field(
        default=DEFAULT_ORGANIZATION, description="Namespace (user or organization) of the repos."
    )
    private: bool = Field(default=False, description="Create new repos as private.")
    repo_template: str = Field(
        default=DEFAULT_REPO_TEMPLATE, description=f"Repo id pattern; fields: {', '.join(TEMPLATE_KEYS)}."
    )
    max_retries: int = Field(
        default=DEFAULT_MAX_RETRIES, description="Retries of a call that failed with 5xx/429 or no connection."
    )
    backoff_s: float = Field(default=DEFAULT_BACKOFF_S, description="First retry delay; doubles on every retry.")

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        return check_endpoint(value)

    @field_validator("organization")
    @classmethod
    def _check_organization(cls, value: str) -> str:
        return check_organization(value)

    @field_validator("repo_template")
    @classmethod
    def _check_template(cls, value: str) -> str:
        return check_repo_template(value)

    @field_validator("max_retries", "backoff_s")
    @classmethod
    def _check_non_negative(cls, value: float) -> float:
        return check_non_negative(value)

    def publisher(self) -> Publisher:
        """The library publisher for this configuration, with the token resolved now: the configured one, else (for
        the embedded hub) NEURONFORGE_HUB_TOKEN, which the embedded server itself requires when set, else HF_TOKEN."""
        embedded = os.environ.get(EMBEDDED_TOKEN_ENV) if self.endpoint is None else None
        return Publisher(
            endpoint=self.endpoint,
            token=self.token or embedded or os.environ.get(TOKEN_ENV) or None,
            organization=self.organization,
            private=self.private,
            repo_template=self.repo_template,
            max_retries=self.max_retries,
            backoff_s=self.backoff_s,
        )

    def endpoint_url(self) -> str:
        """The configured endpoint, or the embedded hub's URL (starting it if it is not running)."""
        return self.publisher().endpoint_url()

    def api(self) -> HfApi:
        """An HfApi client for the resolved endpoint, authenticated with `token`."""
        return self.publisher().api()

    def repo_id_for(self, manifest: dict[str, Any]) -> str:
        """The repo an artifact goes to, from `repo_template` and the manifest (sanitised to a valid Hub id)."""
        return self.publisher().repo_id_for(manifest)

    def current_revision(self, repo_id: str, revision: str = "main") -> str:
        """The commit sha `revision` (branch or tag) points at."""
        return self.publisher().current_revision(repo_id, revision)

    def publish(
        self,
        artifact_dir: Path,
        *,
        model_name: str,
        log: logging.Logger | None = None,
        extra_card: dict[str, Any] | None = None,
    ) -> PublishResult:
        """Upload an artifact folder plus its model card in one commit on main, tagged `ck-<compile_key>`."""
        return self.publisher().publish(artifact_dir, model_name=model_name, log=log, extra_card=extra_card)
