"""Turn prompts and responses into token ids, with the tokenizer's chat template.

``chat_template``:
- ``auto``: when the tokenizer has a chat template, plain-string prompts become a user
  turn and responses an assistant turn, rendered with the template; conversational rows
  always use it. Without a template, plain text is concatenated and EOS appended.
- ``always``: like auto, but a tokenizer without a template is an error.
- ``never``: plain concatenation + EOS even when a template exists (conversational rows
  are then an error).

The response ids are the rendered conversation's ids after the prompt's ids (the prompt
rendered with ``add_generation_prompt=True``). For ChatML (SmolLM2) they end with
``<|im_end|>`` and ``\\n``: the model learns to end its turn.
"""

from __future__ import annotations

from typing import Any

from tether.data.errors import DataError


def _has_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def renders_chat(tokenizer, chat_template: str) -> bool:
    """Whether plain-string rows are rendered in ``tokenizer``'s chat template under ``chat_template`` (True) or as
    plain text (False); no error for ``always`` without a template (:func:`uses_template` raises that when
    encoding)."""
    return chat_template != "never" and _has_template(tokenizer)


def uses_template(tokenizer, chat_template: str, conversational: bool) -> bool:
    has = _has_template(tokenizer)
    if chat_template == "never":
        if conversational:
            raise DataError("conversational rows need a chat template, but data.chat_template is 'never'")
        return False
    if not has:
        if chat_template == "always" or conversational:
            raise DataError("the tokenizer has no chat template; use plain-text rows with data.chat_template=never "
                            "(or a tokenizer with a template)")
        return False
    return True


def _as_messages(value: Any, role: str) -> list[dict]:
    return value if isinstance(value, list) else [{"role": role, "content": value}]


def _ids(tokenizer, text: str, special: bool = False) -> list[int]:
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def _eos(tokenizer) -> list[int]:
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def render_prompt(tokenizer, prompt: Any, chat_template: str = "auto") -> str:
    """The prompt as the model sees it (with the generation prompt when a template applies)."""
    if uses_template(tokenizer, chat_template, isinstance(prompt, list)):
        return tokenizer.apply_chat_template(_as_messages(prompt, "user"), tokenize=False, add_generation_prompt=True)
    return prompt


def encode_prompt(tokenizer, prompt: Any, chat_template: str = "auto") -> list[int]:
    if uses_template(tokenizer, chat_template, isinstance(prompt, list)):
        return _ids(tokenizer, render_prompt(tokenizer, prompt, chat_template))
    return _ids(tokenizer, prompt, special=True)


def encode_prompt_response(tokenizer, prompt: Any, response: Any, chat_template: str = "auto"
                           ) -> tuple[list[int], list[int]]:
    """(prompt_ids, response_ids); ``prompt`` may be None (plain text SFT: everything is response)."""
    conversational = isinstance(prompt, list) or isinstance(response, list)
    if prompt is None:
        return [], _ids(tokenizer, response, special=True) + _eos(tokenizer)
    if not uses_template(tokenizer, chat_template, conversational):
        return _ids(tokenizer, prompt, special=True), _ids(tokenizer, response) + _eos(tokenizer)
    prompt_msgs = _as_messages(prompt, "user")
    prompt_text = tokenizer.apply_chat_template(prompt_msgs, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(prompt_msgs + _as_messages(response, "assistant"), tokenize=False)
    prompt_ids, full_ids = _ids(tokenizer, prompt_text), _ids(tokenizer, full_text)
    if full_ids[:len(prompt_ids)] == prompt_ids:
        return prompt_ids, full_ids[len(prompt_ids):]
    # Templates whose rendering of the prompt is not a token prefix of the full conversation:
    # tokenise the text that follows the prompt on its own.
    if full_text.startswith(prompt_text):
        return prompt_ids, _ids(tokenizer, full_text[len(prompt_text):])
    raise DataError("the chat template renders the prompt differently inside the full conversation; "
                    "use data.chat_template=never or a standard template")


def response_text(response: Any) -> str:
    """Plain text of a response (the assistant turns' contents) for reports and length baselines."""
    if isinstance(response, list):
        return "\n".join(m["content"] for m in response)
    return response


def prompt_text(prompt: Any) -> str:
    if prompt is None:
        return ""
    if isinstance(prompt, list):
        return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)
    return prompt
