"""Which providers are configured, have credentials, answer, and are allowed; what the others need.

Credentials are only looked for through each SDK's standard chain; nothing here reads, prints or
stores a secret.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from placement.errors import PlacementError
from placement.models import PolicySet
from providers.registry import ProvidersConfig, build_compute


def _aws_credentials() -> bool:
    import boto3

    return boto3.session.Session().get_credentials() is not None


def _gcp_credentials() -> bool:
    try:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError
    except ImportError:
        return False
    try:
        google.auth.default()
    except DefaultCredentialsError:
        return False
    return True


def _azure_credentials() -> bool:
    env = {"AZURE_CLIENT_ID", "AZURE_TENANT_ID"}
    if env <= set(os.environ) or "IDENTITY_ENDPOINT" in os.environ:
        return True
    return any(os.path.exists(os.path.join(d, "az")) for d in os.environ.get("PATH", "").split(os.pathsep))


def _lambda_credentials() -> bool:
    return bool(os.environ.get("LAMBDA_API_KEY"))


@dataclass(frozen=True)
class ProviderType:
    type: str
    credentials: Callable[[], bool]
    how_to_configure: str
    how_to_authenticate: str


PROVIDER_TYPES: tuple[ProviderType, ...] = (
    ProviderType("aws", _aws_credentials, "add `aws: {type: aws, regions: [...], image_ids: {...}}` to providers.yaml",
                 "boto3's chain: AWS_PROFILE, `aws configure`, SSO or an instance/task role"),
    ProviderType("gcp", _gcp_credentials, "add `gcp: {type: gcp, project: ..., zones: [...]}` to providers.yaml",
                 "application default credentials: `gcloud auth application-default login` or a service account"),
    ProviderType("azure", _azure_credentials,
                 "add `azure: {type: azure, subscription_id: ..., resource_group: ...}` to providers.yaml",
                 "DefaultAzureCredential: `az login`, a managed identity or AZURE_CLIENT_ID/AZURE_TENANT_ID"),
    ProviderType("lambda", _lambda_credentials, "add `lambda: {type: lambda, regions: [...]}` to providers.yaml",
                 "an API key in the LAMBDA_API_KEY environment variable"),
)


@dataclass(frozen=True)
class ProviderCheck:
    name: str
    type: str
    configured: bool
    credentials: bool
    reachable: bool | None
    allowed: bool
    detail: str


def _allowed(name: str, policies: PolicySet | None) -> bool:
    if policies is None:
        return True
    if policies.allowed_providers and name not in policies.allowed_providers:
        return False
    return name not in policies.forbidden_providers


def check_providers(
    config: ProvidersConfig, policies: PolicySet | None = None, *, probe: bool = True
) -> list[ProviderCheck]:
    """One row per configured provider, then one per provider type nobody configured."""
    rows: list[ProviderCheck] = []
    types = {t.type: t for t in PROVIDER_TYPES}
    for name, settings in sorted(config.providers.items()):
        kind = types.get(settings.type)
        creds = kind.credentials() if kind is not None else False
        reachable: bool | None = None
        detail = ""
        if probe and creds:
            try:
                offers = build_compute(name, config).offers()
                reachable = True
                detail = f"{len(offers)} offers"
            except PlacementError as exc:
                reachable = False
                detail = str(exc)
        elif not creds:
            detail = f"no credentials found; {kind.how_to_authenticate}" if kind else f"type {settings.type!r} has no adapter"
        rows.append(ProviderCheck(name, settings.type, True, creds, reachable, _allowed(name, policies), detail))
    used = {s.type for s in config.providers.values()}
    for kind in PROVIDER_TYPES:
        if kind.type in used:
            continue
        creds = kind.credentials()
        hint = kind.how_to_configure + ("" if creds else f"; credentials: {kind.how_to_authenticate}")
        rows.append(ProviderCheck(kind.type, kind.type, False, creds, None, _allowed(kind.type, policies), hint))
    return rows
