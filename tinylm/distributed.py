"""Training on several processes under ``torchrun``: ranks, DDP's gradient sync, FSDP's shards.

Every process trains on its own batches and only rank 0 logs, saves and shows progress. With
``parallel="ddp"`` (the default) every process holds the whole model and DistributedDataParallel
averages the gradients; with ``parallel="fsdp"`` each process holds only its shard of every
parameter, gradient and AdamW moment (ZeRO-3), for models too big to copy onto every GPU. The
files a run writes are the same either way: the helpers here gather whole tensors for saving
and cut saved ones back into shards for resuming.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.nn.parallel import DistributedDataParallel as DDP

from tinylm.model import GPT


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0 logs, saves and shows progress."""
        return self.rank == 0


def setup_distributed(device_type: str) -> tuple[Distributed, bool]:
    """Join torchrun's process group (RANK/WORLD_SIZE/LOCAL_RANK in the environment).

    Returns the process's place and whether this call created the group (then we destroy it).
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Distributed(), False
    place = Distributed(env_int("RANK"), env_int("LOCAL_RANK", 0), env_int("WORLD_SIZE"))
    if dist.is_initialized():
        return place, False
    if device_type == "cuda":
        torch.cuda.set_device(place.local_rank)
    try:
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    except ValueError as error:  # torchrun sets MASTER_ADDR and MASTER_PORT; a user may not
        raise ValueError(
            f"{error}. RANK and WORLD_SIZE are set, so this process trains as one of "
            f"{place.world_size}: start them with torchrun --nproc_per_node=N, or unset RANK and "
            "WORLD_SIZE to train in one process"
        ) from None
    return place, True


def env_int(name: str, default: int | None = None) -> int:
    """An integer that torchrun puts in the environment; a clear error if someone else did."""
    value = os.environ.get(name)
    if value is None and default is not None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name}={value!r} is not an integer: torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; "
            "unset them to train in one process"
        ) from None


def sync_gradients_if(model: torch.nn.Module, last: bool) -> AbstractContextManager:
    """Under DDP or FSDP, reduce the gradients across ranks only after the last micro-batch."""
    if isinstance(model, DDP):
        return nullcontext() if last else model.no_sync()
    module = getattr(model, "_orig_mod", model)  # the model inside torch.compile's wrapper
    if isinstance(module, FSDPModule):
        # Until the last micro-batch: no reduce-scatter (gradients add up unsharded, as under
        # DDP), and the parameters stay gathered after backward (the next forward needs them).
        module.set_requires_gradient_sync(last)
        module.set_reshard_after_backward(last)
    return nullcontext()


def gather_rng_states(state: dict, place: Distributed) -> list[dict]:
    """Every rank's RNG state, in rank order (rank 0 saves them all)."""
    if place.world_size == 1:
        return [state]
    states: list = [None] * place.world_size
    dist.all_gather_object(states, state)
    return states


def shard_model(model: GPT, device: torch.device, bf16: bool) -> GPT:
    """Shard each transformer block, then the rest (embeddings, final norm, head), over ranks."""
    with torch.no_grad():  # every rank starts from rank 0's weights, as DDP would copy them
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor, src=0)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    # bf16: gather the weights and compute in bf16, average the gradients in fp32; AdamW still
    # updates fp32 weights. The autocast context stays on, keeping norms and softmax in fp32.
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if bf16
        else MixedPrecisionPolicy()
    )
    for block in model.transformer.h:  # one all-gather per block: few blocks are whole at once
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)  # the root: wte (= lm_head if tied), wpe, ln_f
    return model  # the same object, its class now also an FSDPModule


def gather_full_model(model: GPT) -> GPT:
    """A plain GPT with the whole weights of a sharded one, on every rank (a collective)."""
    state = {
        name: (tensor.full_tensor() if isinstance(tensor, DTensor) else tensor).detach()
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]
    }
    with torch.device("meta"):  # no memory, no random init: the gathered tensors are assigned
        plain = GPT(model.config)
    if model.config.tie_weights:  # named_parameters lists the shared matrix once, as wte
        state["lm_head.weight"] = state["transformer.wte.weight"]
    plain.load_state_dict(state, assign=True)
    if model.config.tie_weights:
        plain.lm_head.weight = plain.transformer.wte.weight  # one Parameter again, as in GPT()
    return plain


def gather_optimizer_state(optimizer: torch.optim.Optimizer, main: bool) -> dict | None:
    """optimizer.state_dict() with whole tensors, as without FSDP, on rank 0 (a collective)."""
    state = optimizer.state_dict()  # {"state": {index: {"step", "exp_avg", ...}}, "param_groups"}
    full: dict[int, dict] = {}
    for index, values in state["state"].items():  # the same order on every rank
        whole = {
            key: value.full_tensor() if isinstance(value, DTensor) else value
            for key, value in values.items()
        }
        if main:  # to the CPU one tensor at a time: the device never holds all of them
            full[index] = {key: value.cpu() for key, value in whole.items()}
    return {**state, "state": full} if main else None


def shard_optimizer_state(state: dict, optimizer: torch.optim.Optimizer) -> dict:
    """A whole optimizer state_dict cut into this rank's slices, to load into the sharded one."""
    params = [p for group in optimizer.param_groups for p in group["params"]]  # index order
    sharded: dict[int, dict] = {}
    for index, values in state["state"].items():
        param = params[index]
        sharded[index] = {
            key: distribute_tensor(
                value.to(param.device), param.device_mesh, param.placements, src_data_rank=None
            )  # every rank read the whole file
            if isinstance(param, DTensor) and value.shape == param.shape
            else value  # not step
            for key, value in values.items()
        }
    return {**state, "state": sharded}


def barrier(place: Distributed) -> None:
    """Wait until every rank gets here (nothing to wait for in a single process)."""
    if place.world_size > 1:
        dist.barrier()


def leave(owns_group: bool) -> None:
    """Destroy the process group if `setup_distributed` created it."""
    if owns_group:
        dist.destroy_process_group()
