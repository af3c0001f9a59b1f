"""The typed app builder: a bundle path (and a few knobs) -> a Ray Serve application.

Used by `recsys serve` and by `configs/serve.yaml` (`serve run configs/serve.yaml` or
`serve deploy configs/serve.yaml` against an existing cluster), e.g.

    serve run serving.app:build_app bundle_path=out/bundle

Layouts: "single" (default: FastAPI ingress and model in one replica, one hop less) or
"composed" (an ingress deployment calling the model deployment through a handle, so the two
scale separately). Replicas ask for a GPU when the cluster has one (the bundle's item index
is then kept in bf16 on the GPU) and run on CPU otherwise.

A hot swap changes the model deployment's `user_config` alone, through the config's
`deployments:` override (changing `args` restarts the replicas instead): Serve then calls
`reconfigure` on the running replicas. A replica that restarts later loads `bundle_path`
from `args` in `__init__` and switches to the override in `reconfigure`. See serve.yaml and
`serving.deploy`.
"""

# No `from __future__ import annotations` here: Serve reads the builder's parameter
# annotation at run time to validate the args into `AppArgs`.
import dataclasses
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application, Deployment

from recsys.recommend import DEFAULT_RAILS_BUDGET
from serving.deployments import (
    DEFAULT_BATCH_WAIT_TIMEOUT_S,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_QUERY_CACHE_SIZE,
    IngressApp,
    NoopApp,
    RecommenderApp,
    RecommenderModel,
    ServiceConfig,
)


class AppArgs(BaseModel):
    """Arguments of `build_app` (the `args:` block of serve.yaml)."""

    model_config = ConfigDict(extra="forbid")

    bundle_path: str = Field(description="Bundle directory written by `recsys export`.")
    default_retriever: Literal["exact", "rails"] = "rails"
    layout: Literal["single", "composed"] = "single"
    replicas: int = Field(default=1, ge=1, description="Model replicas.")
    max_batch_size: int = Field(default=DEFAULT_MAX_BATCH_SIZE, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(default=DEFAULT_BATCH_WAIT_TIMEOUT_S, ge=0, le=1)
    max_ongoing_requests: int = Field(
        default=128, ge=1, description="Per replica; at least max_batch_size for full batches."
    )
    num_cpus: float = Field(default=1.0, gt=0, description="CPUs reserved per model replica.")
    num_gpus: float | None = Field(
        default=None,
        ge=0,
        description="GPUs per model replica; default 1 when the cluster has one.",
    )
    torch_threads: int | None = Field(
        default=None, ge=1, description="Intra-op threads per replica; default max(1, num_cpus)."
    )
    rails_budget: int | None = Field(
        default=DEFAULT_RAILS_BUDGET,
        ge=1,
        description="Candidates the rails retriever rescores per query.",
    )
    query_cache_size: int = Field(
        default=DEFAULT_QUERY_CACHE_SIZE,
        ge=0,
        description="Users whose stored-history query is cached.",
    )
    model_thread: bool = Field(
        default=False,
        description="Run each batch in a worker thread instead of on the replica's event loop.",
    )
    noop: bool = Field(
        default=False, description="Serve a model-free stand-in (benchmark baseline)."
    )


def cluster_has_gpu() -> bool:
    """True when the connected Ray cluster (or, without one, this machine) has a GPU."""
    import ray

    if ray.is_initialized():
        return ray.cluster_resources().get("GPU", 0) > 0
    import torch

    return torch.cuda.is_available()


def service_config(args: AppArgs) -> ServiceConfig:
    """What the replicas load in `__init__` (stays fixed across hot swaps)."""
    return ServiceConfig(
        bundle_path=args.bundle_path,
        default_retriever=args.default_retriever,
        max_batch_size=args.max_batch_size,
        batch_wait_timeout_s=args.batch_wait_timeout_s,
        torch_threads=args.torch_threads or max(1, int(args.num_cpus)),
        rails_budget=args.rails_budget,
        query_cache_size=args.query_cache_size,
        model_thread=args.model_thread,
    )


def model_deployment(deployment: Deployment, args: AppArgs, config: ServiceConfig) -> Deployment:
    """`deployment` with the replica count, resources and user_config `args` ask for."""
    num_gpus = args.num_gpus if args.num_gpus is not None else float(cluster_has_gpu())
    return deployment.options(
        num_replicas=args.replicas,
        max_ongoing_requests=args.max_ongoing_requests,
        ray_actor_options={"num_cpus": args.num_cpus, "num_gpus": 0.0 if args.noop else num_gpus},
        # The hot-swap channel: a new bundle_path here is loaded by `reconfigure`.
        user_config=dataclasses.asdict(config),
    )


def build_app(args: AppArgs) -> Application:
    """The recommendation application described by `args`."""
    config = service_config(args)
    if args.noop:
        return model_deployment(NoopApp, args, config).bind(config)
    if args.layout == "single":
        return model_deployment(RecommenderApp, args, config).bind(config)
    model = model_deployment(RecommenderModel, args, config).bind(config)
    return IngressApp.options(
        num_replicas=1,
        max_ongoing_requests=args.max_ongoing_requests,
        ray_actor_options={"num_cpus": 0.5},
    ).bind(model)
