"""What OpenAI-compatible servers other than OpenAI say their own way, for the simulator to say.

Context-length errors, as each server answers a prompt too long for its model
(`[[sim: fault=context_vllm]]` and the like; OpenAI's own is `fault=context_length`):

- vLLM's OpenAI server: a 400 whose `code` is the status as a number and whose
  `type` is the Python exception's name; "This model's maximum context length
  is N tokens. However, you requested M tokens ..." or, from vLLM V1's input
  check, "... is longer than the maximum model length of N".
- Ollama's OpenAI-compatible endpoints: "the input length exceeds the context
  length" (a 500 `api_error` from older versions) or "prompt too long; exceeded
  max context length by N tokens" (400).
- llama.cpp's server: 400 with a type of its own, `exceed_context_size_error`,
  and the figures (`n_prompt_tokens`, `n_ctx`).
- LiteLLM's proxy: 400 with the exception's name (`ContextWindowExceededError`)
  in the message, the provider's own words after it, and `"code": "400"`.

And LiteLLM's usage chunk: with `stream_options.include_usage`, LiteLLM's proxy
ends a chat stream with a chunk whose `choices` hold one choice with an empty
delta, `[{"index": 0, "delta": {}}]`, where OpenAI sends `[]`
(`[[sim: dialect=litellm]]`).
"""

from __future__ import annotations

from typing import Any

# fault name -> (HTTP status, the `error` object of the body)
CONTEXT_FAULTS: dict[str, tuple[int, dict[str, Any]]] = {
    "context_vllm": (
        400,
        {
            "message": (
                "This model's maximum context length is 8192 tokens. However, you requested "
                "9000 tokens (8000 in the messages, 1000 in the completion). Please reduce the "
                "length of the messages or completion."
            ),
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        },
    ),
    "context_vllm_model_len": (
        400,
        {
            "message": (
                "The decoder prompt (length 9000) is longer than the maximum model length of "
                "8192. Make sure that `max_model_len` is no smaller than the number of text tokens."
            ),
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        },
    ),
    "context_ollama": (
        500,
        {
            "message": "the input length exceeds the context length",
            "type": "api_error",
            "param": None,
            "code": None,
        },
    ),
    "context_ollama_prompt": (
        400,
        {
            "message": "prompt too long; exceeded max context length by 808 tokens",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        },
    ),
    "context_llamacpp": (
        400,
        {
            "code": 400,
            "message": (
                "request (9000 tokens) exceeds the available context size (8192 tokens), "
                "try increasing it"
            ),
            "type": "exceed_context_size_error",
            "n_prompt_tokens": 9000,
            "n_ctx": 8192,
        },
    ),
    "context_litellm": (
        400,
        {
            "message": (
                "litellm.ContextWindowExceededError: litellm.BadRequestError: "
                "AnthropicException - input length and `max_tokens` exceed context limit: "
                "179413 + 32768 > 200000, decrease input length or `max_tokens` and try again\n"
                "Received Model Group=claude-sonnet\nAvailable Model Group Fallbacks=None"
            ),
            "type": None,
            "param": None,
            "code": "400",
        },
    ),
}

DIALECTS = ("openai", "litellm")
# The choices of the usage chunk that ends a chat stream, per dialect.
USAGE_CHOICES: dict[str, list[dict[str, Any]]] = {
    "openai": [],
    "litellm": [{"index": 0, "delta": {}}],
}
