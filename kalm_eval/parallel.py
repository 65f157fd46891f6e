"""Who am I among the workers of one run, and how units of work are shared between them.

Heavy steps are cut into units whose identity does not depend on the number of workers (corpus id ranges, query
blocks x corpus shards, passage chunks). Unit i belongs to worker `i % world`; each unit writes its output
atomically and an existing output is never recomputed, so any number of workers, in any number of attempts,
produces the same files.

Where the rank comes from:
- torchrun (`torchrun --nproc-per-node=N -m kalm_eval ...`): RANK / WORLD_SIZE / LOCAL_RANK, plus a process group
  (gloo on CPU, nccl on CUDA) for the barrier before rank 0 merges; each rank ends when its torchrun agent dies;
- a SLURM job array through Hydra's submitit launcher: `worker=<i> workers=<n>` overrides (config keys), no barrier:
  the worker that finds every unit present merges (merges are deterministic and their commits atomic even when two
  run at once, storage.replace_directory, so two are harmless);
- neither: one worker.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Workers:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    distributed: bool = False  # a torch.distributed process group is up (torchrun): barrier() synchronises

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"worker rank {self.rank} outside 0..{self.world - 1}")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mine(self, unit_index: int) -> bool:
        return unit_index % self.world == self.rank

    def share(self, items: list) -> list:
        """The items (units in a fixed global order) this worker computes."""
        return [item for i, item in enumerate(items) if self.mine(i)]

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def label(self) -> str:
        return f"[rank {self.rank}/{self.world}] " if self.world > 1 else ""


def from_environment(worker: int | None = None, workers: int | None = None) -> Workers:
    """torchrun's environment wins; else explicit `worker`/`workers` (a job array); else a single worker."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        if "TORCHELASTIC_RUN_ID" in os.environ:  # started by torchrun's agent
            exit_with_agent(rank)
        _init_process_group()
        return Workers(rank=rank, world=world, local_rank=int(os.environ.get("LOCAL_RANK", 0)), distributed=True)
    if workers is not None and workers > 1:
        return Workers(rank=int(worker or 0), world=int(workers))
    return Workers()


AGENT_POLL_S = 1.0


def exit_with_agent(rank: int, poll_s: float = AGENT_POLL_S) -> threading.Thread:
    """Stop this rank when its torchrun agent is gone. torchrun starts every rank in a session of its own, so a
    `kill -9` of torchrun leaves its ranks running, orphaned: they went on computing units and committing the same
    records as the resumed run beside them (the cause of a resume failure, docs/rehearsal.md). A daemon thread
    watches the parent pid and ends the process as kill -9 would (what it committed stays; nothing is partial)."""
    agent = os.getppid()

    def watch() -> None:
        while os.getppid() == agent:
            time.sleep(poll_s)
        log.error("rank %d: its torchrun agent (pid %d) is gone; stopping this rank", rank, agent)
        os._exit(AGENT_GONE_EXIT)

    thread = threading.Thread(target=watch, name="kalm-eval-agent-watch", daemon=True)
    thread.start()
    return thread


AGENT_GONE_EXIT = 137  # as if killed with SIGKILL, like the agent


def _init_process_group() -> None:
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    # Ranks wait for each other at the end of a long shard of work: a generous timeout, not the 30-minute default.
    dist.init_process_group(backend=backend, timeout=dt.timedelta(hours=12))
    log.info("process group up: backend %s, rank %s of %s", backend, dist.get_rank(), dist.get_world_size())
