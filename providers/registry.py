"""Provider configuration (``providers.yaml``) and the factory that turns a provider name into a Compute.

The file is optional and holds no credentials: each adapter uses its SDK's default credential chain
(for AWS: environment variables, ``~/.aws``, SSO, instance or task roles). A key that looks like a
credential is rejected with a message saying so.

Example::

    providers:
      aws:
        type: aws
        regions: [us-east-1, eu-west-1]
        image_ids: {us-east-1: ami-0123456789abcdef0}
        image_ssm_parameter: /aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id
        key_name: ops
        subnet_ids: {us-east-1a: subnet-0123, eu-west-1b: subnet-0456}
        security_group_ids: {us-east-1: [sg-0123]}
        instance_profile: gpu-node
        tags: {cost-center: ml}
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from placement.errors import InputError, PlacementError, Problem
from placement.models import Name
from placement.yamlio import error_problems, parse_yaml
from providers.azure import AzureSettings
from providers.base import TAG_PREFIX
from providers.gcp import GcpSettings
from providers.kubernetes import KubernetesSettings
from providers.lambda_cloud import LambdaSettings
from providers.slurm import SlurmSettings

if TYPE_CHECKING:
    from providers.base import Compute

ADAPTER_TYPES: tuple[str, ...] = ("aws", "azure", "gcp", "lambda", "kubernetes", "slurm")

_CREDENTIAL_KEYS = frozenset({
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "access_key", "access_key_id",
    "secret_key", "secret_access_key", "secret", "session_token", "password", "token", "credentials",
    "client_secret", "private_key", "api_key",
})


def _credential_keys(value: Any, path: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if str(key).lower().replace("-", "_") in _CREDENTIAL_KEYS:
                found.append(where)
            found.extend(_credential_keys(item, where))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found.extend(_credential_keys(item, f"{path}[{i}]"))
    return found


class _Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AwsSettings(_Settings):
    """One AWS account as the engine uses it."""

    type: Literal["aws"] = "aws"
    regions: Annotated[tuple[Name, ...], Field(min_length=1)]
    image_ids: dict[str, str] = Field(default_factory=dict, description="AMI id per region")
    image_ssm_parameter: str | None = Field(
        default=None, description="SSM parameter holding the AMI id, used for regions without image_ids"
    )
    key_name: str | None = None
    subnet_ids: dict[str, str] = Field(default_factory=dict, description="subnet id per availability zone")
    security_group_ids: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="security group ids per region"
    )
    instance_profile: str | None = Field(default=None, description="IAM instance profile name or ARN")
    tags: dict[str, str] = Field(default_factory=dict, description="extra tags on every resource")
    instance_types: tuple[str, ...] = Field(
        default=(), description="instance type patterns to list (e.g. 'p5.*'); empty: every GPU type"
    )
    spot: bool = Field(default=True, description="list spot offers")
    use_pricing_api: bool = Field(default=True, description="ask the Pricing API for on-demand prices")
    use_service_quotas: bool = Field(default=True, description="ask Service Quotas for vCPU limits")

    @model_validator(mode="after")
    def _check(self) -> AwsSettings:
        regions = set(self.regions)
        if len(regions) != len(self.regions):
            raise ValueError("regions lists a region twice")
        for what, keys in (("image_ids", self.image_ids), ("security_group_ids", self.security_group_ids)):
            unknown = sorted(set(keys) - regions)
            if unknown:
                raise ValueError(f"{what} names regions not in regions: {', '.join(unknown)}")
        stray = sorted(z for z in self.subnet_ids if not any(z.startswith(r) for r in regions))
        if stray:
            raise ValueError(f"subnet_ids names zones outside the configured regions: {', '.join(stray)}")
        reserved = sorted(k for k in self.tags if k.startswith((TAG_PREFIX, "aws:")))
        if reserved:
            raise ValueError(f"tags may not use the reserved prefixes {TAG_PREFIX!r} or 'aws:': "
                             f"{', '.join(reserved)}")
        return self


class OtherProviderSettings(BaseModel):
    """Settings of a provider type this version has no adapter for; kept so that the error can name it."""

    model_config = ConfigDict(frozen=True, extra="allow")

    type: Annotated[str, Field(min_length=1)]


_SETTINGS_TAGS = (*ADAPTER_TYPES, "other")


def _settings_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, Mapping) else getattr(value, "type", None)
    return kind if kind in ADAPTER_TYPES else "other"


ProviderSettings = Annotated[
    Annotated[AwsSettings, Tag("aws")]
    | Annotated[AzureSettings, Tag("azure")]
    | Annotated[GcpSettings, Tag("gcp")]
    | Annotated[LambdaSettings, Tag("lambda")]
    | Annotated[KubernetesSettings, Tag("kubernetes")]
    | Annotated[SlurmSettings, Tag("slurm")]
    | Annotated[OtherProviderSettings, Tag("other")],
    Discriminator(_settings_kind),
]


class ProvidersConfig(BaseModel):
    """Every configured provider by name (the name offers carry in their ``provider`` field)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    providers: dict[Name, ProviderSettings] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _no_credentials(cls, value: Any) -> Any:
        found = _credential_keys(value)
        if found:
            raise ValueError(
                f"credentials do not belong in the providers config ({', '.join(found)}); each adapter "
                "uses its SDK's default credential chain (environment, ~/.aws, SSO, instance role)"
            )
        return value


def load_providers_config(path: Path | str | None) -> ProvidersConfig:
    """Read ``providers.yaml``. No path means no configured providers.

    Mistakes become an InputError naming the file, line and field.
    """
    if path is None:
        return ProvidersConfig()
    source = parse_yaml(Path(path))
    data = source.data if source.data is not None else {}
    if not isinstance(data, dict):
        raise InputError([source.problem((), "expected a mapping with a 'providers' key")])
    try:
        return ProvidersConfig.model_validate(data)
    except ValidationError as exc:
        errors = [_without_union_tag(err) for err in exc.errors(include_url=False)]
        problems = error_problems(errors, source)
        raise InputError(problems or [Problem(source.name, None, "", str(exc))]) from None


def _without_union_tag(err: Any) -> Any:
    # pydantic puts the discriminator tag after the provider name: ("providers", "aws", "aws", "regions").
    loc = tuple(err["loc"])
    if len(loc) >= 3 and loc[0] == "providers" and loc[2] in _SETTINGS_TAGS:
        err = {**err, "loc": loc[:2] + loc[3:]}
    return err


def build_compute(
    provider: str,
    config: ProvidersConfig,
    *,
    prices: Mapping[tuple[str, str], float] | None = None,
    session: Any = None,
) -> Compute:
    """The adapter for the provider named ``provider`` in ``config``.

    ``prices`` maps (region, instance type) to an hourly USD price used when a live price list is
    unavailable; ``session`` is an SDK session to use instead of a new one (for tests).
    """
    settings = config.providers.get(provider)
    if settings is None:
        configured = ", ".join(sorted(config.providers)) or "none"
        raise PlacementError(f"no provider named {provider!r} in the providers config (configured: {configured})")
    if isinstance(settings, AwsSettings):
        from providers.aws import AwsCompute

        return AwsCompute(provider, settings, prices=prices, session=session)
    if isinstance(settings, GcpSettings):
        from providers.gcp import GcpCompute

        return GcpCompute(provider, settings, prices=prices)
    if isinstance(settings, AzureSettings):
        from providers.azure import AzureCompute

        return AzureCompute(provider, settings, prices=prices, credential=session)
    if isinstance(settings, LambdaSettings):
        from providers.lambda_cloud import LambdaCompute

        return LambdaCompute(provider, settings)
    if isinstance(settings, KubernetesSettings):
        from providers.kubernetes import KubernetesCompute

        return KubernetesCompute(provider, settings)
    if isinstance(settings, SlurmSettings):
        from providers.slurm import SlurmCompute

        return SlurmCompute(provider, settings)
    raise PlacementError(
        f"provider {provider!r} has type {settings.type!r}, which has no adapter "
        f"(adapters: {', '.join(ADAPTER_TYPES)})"
    )
