"""One process of a multi-process launch that runs several tether commands in a row (tests/distributed/test_fsdp.py).

``python -m torch.distributed.run ... tests/distributed/fsdp_worker.py '<json list of steps>'``; each step is a
tether command line (a list of arguments, run exactly as ``tether <args>`` runs it), ``{"copy": [source, target]}``
or ``{"remove": path}``: the main process copies that folder or deletes that file or folder, and every process
waits for it; ``{"generate": path}``: every process samples its rows of ``lockstep_batch`` with the sharded
``lockstep_model`` and writes them to ``<path>.<rank>.json``. One launch for several recipes keeps the
start-up cost of the processes (importing torch and transformers) to once.
"""

import json
import shutil
import sys
from pathlib import Path

import torch

from tether.cli import app
from tether.rollout.generation import GenerationConfig, generate, row_seeds
from tether.utils.distributed import Dist

EOS, PAD, LOCKSTEP_ROWS, LOCKSTEP_NEW_TOKENS = 0, 1, 8, 24
_GOLD_CALLS = [0]


def rising_gold(prompts: list[str], responses: list[str], response_ids: list[list[int]]) -> list[float]:
    """A held-out "gold" reward that rises at every call (a counter per process), as in a run that improves: the
    held-out evaluation then keeps a new best policy (``heldout.keep_best``) at every point after the first."""
    _GOLD_CALLS[0] += 1
    return [float(_GOLD_CALLS[0])] * len(responses)


def lockstep_model():
    """A tiny random Llama with a 6-token vocabulary: EOS (token 0) is drawn now and then, so rows end early and
    at different steps."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=6, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, eos_token_id=EOS, pad_token_id=PAD,
                         tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


def lockstep_batch() -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(prompt ids, mask, one seed per row): LOCKSTEP_ROWS prompts of 3 tokens, without padding."""
    ids = torch.tensor([[2 + (r + k) % 4 for k in range(3)] for r in range(LOCKSTEP_ROWS)])
    return ids, torch.ones_like(ids), row_seeds(0, 0, list(range(LOCKSTEP_ROWS)))


def lockstep_generate(model, rows: list[int]) -> torch.Tensor:
    ids, mask, seeds = lockstep_batch()
    return generate(model, ids[rows], mask[rows], GenerationConfig(max_new_tokens=LOCKSTEP_NEW_TOKENS), EOS, PAD,
                    seeds=[seeds[r] for r in rows]).response_ids


def _generate_step(path: str) -> None:
    dist = Dist.current()
    model = dist.wrap(lockstep_model())
    rows = dist.shard_evenly(list(range(LOCKSTEP_ROWS)))
    Path(f"{path}.{dist.rank}.json").write_text(json.dumps({"rows": rows,
                                                             "responses": lockstep_generate(model, rows).tolist()}))


def main(steps: list) -> int:
    for step in steps:
        if isinstance(step, dict) and "generate" in step:
            _generate_step(step["generate"])
            continue
        if isinstance(step, dict):
            if Dist.current().is_main:
                if "copy" in step:
                    shutil.copytree(*step["copy"])
                else:
                    target = Path(step["remove"])
                    shutil.rmtree(target) if target.is_dir() else target.unlink()
            Dist.current().barrier()
            continue
        code = app(step, standalone_mode=False, prog_name="tether")
        if code:
            return int(code)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
