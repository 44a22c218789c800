"""Sample responses with ``transformers.generate`` and turn them into aligned tensors.

Shapes: B prompts, P prompt positions (left-padded), R response positions (right-padded).
The response mask is 1 up to and including the first EOS, so a response that ends with
EOS keeps it (the reward is placed there) and everything after it is padding — correct
also when the pad token is the EOS token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tether.algos.logprobs import token_logprobs


@dataclass
class GenerationConfig:
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    do_sample: bool = True


@dataclass
class Rollout:
    prompt_ids: torch.Tensor       # (B, P) left-padded
    prompt_mask: torch.Tensor      # (B, P)
    response_ids: torch.Tensor     # (B, R) right-padded
    response_mask: torch.Tensor    # (B, R) 1 up to and including the first EOS
    ended_with_eos: torch.Tensor   # (B,) bool

    @property
    def input_ids(self) -> torch.Tensor:  # (B, P + R)
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:  # (B, P + R)
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)

    @property
    def response_lengths(self) -> torch.Tensor:  # (B,)
        return self.response_mask.sum(-1)


def response_mask_from_ids(response_ids: torch.Tensor, eos_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask (B, R), ended_with_eos (B,)): 1 up to and including the first EOS of each row."""
    is_eos = response_ids == eos_token_id
    ended = is_eos.any(-1)
    first_eos = torch.where(ended, is_eos.float().argmax(-1), torch.full_like(ended, response_ids.shape[1], dtype=torch.long))
    positions = torch.arange(response_ids.shape[1]).expand_as(response_ids)
    mask = (positions <= first_eos.unsqueeze(-1)).long()
    return mask, ended


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that ignore left padding: 0 at each sequence's first real token (as generate uses)."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def generate(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, config: GenerationConfig,
             eos_token_id: int, pad_token_id: int) -> Rollout:
    """Sample one response per (left-padded) prompt."""
    was_training = model.training
    model.eval()
    kwargs = dict(max_new_tokens=config.max_new_tokens, do_sample=config.do_sample, pad_token_id=pad_token_id,
                  eos_token_id=eos_token_id)
    if config.do_sample:
        kwargs.update(temperature=config.temperature, top_p=config.top_p, top_k=0)
    output = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, **kwargs)
    model.train(was_training)
    response_ids = output[:, prompt_ids.shape[1]:]
    if response_ids.shape[1] == 0:
        raise RuntimeError("generation produced no tokens (max_new_tokens must be > 0)")
    mask, ended = response_mask_from_ids(response_ids, eos_token_id)
    response_ids = torch.where(mask.bool(), response_ids, torch.full_like(response_ids, pad_token_id))
    return Rollout(prompt_ids, prompt_mask, response_ids, mask, ended)


def response_logprobs(model, rollout: Rollout, temperature: float = 1.0,
                      return_entropy: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """log π(response token) under ``model`` at the sampling temperature → (B, R) fp32, 0 on padding."""
    input_ids, attention_mask = rollout.input_ids, rollout.attention_mask
    logits = model(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=position_ids(attention_mask)).logits
    n_prompt = rollout.prompt_ids.shape[1]
    logits = logits[:, n_prompt - 1:-1].float() / temperature  # the output at t predicts token t + 1
    logps = token_logprobs(logits, rollout.response_ids, rollout.response_mask)
    if not return_entropy:
        return logps
    from tether.algos.logprobs import entropy_from_logits

    return logps, entropy_from_logits(logits) * rollout.response_mask
