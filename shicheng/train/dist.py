"""The one view of this process that the runner and the stages share: rank, world size and barriers, from
accelerate's PartialState, built the way transformers' TrainingArguments builds it.

TrainingArguments resets accelerate's shared state and builds it again from `ACCELERATE_USE_CPU`; a state
built here with other arguments would describe another world (one process where the Trainer sees two), so
this reads the same flag. On CPU, `accelerate launch --cpu` starts one process (several need mpirun); two
gloo processes come from `ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 …`.
"""

from __future__ import annotations

import os


def process_state():
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and state.num_processes != launched:
        raise RuntimeError(f"launched as {launched} processes but accelerate sees {state.num_processes}: on a "
                           "machine without GPUs set ACCELERATE_USE_CPU=true so that the ranks join over gloo")
    return state
