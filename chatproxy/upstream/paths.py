"""The upstream paths chatproxy calls, under OPENAI_BASE_URL: fixed here, never a client's choice.

Each is a route of the OpenAI API reference, without its `/v1` (part of the
base URL). The pass-through may POST a JSON body to RAW_PATHS only
(`Upstream.post_raw`), and a multipart upload, as the client sent it, to
UPLOAD_PATHS only (`Upstream.post_upload`).
"""

from __future__ import annotations

import re

CHAT_PATH = "/chat/completions"
COMPLETIONS_PATH = "/completions"  # legacy
RESPONSES_PATH = "/responses"
EMBEDDINGS_PATH = "/embeddings"
MODERATIONS_PATH = "/moderations"
SPEECH_PATH = "/audio/speech"
IMAGES_PATH = "/images/generations"
TRANSCRIPTIONS_PATH = "/audio/transcriptions"
TRANSLATIONS_PATH = "/audio/translations"
IMAGE_EDITS_PATH = "/images/edits"
# The upstream paths (under OPENAI_BASE_URL) a pass-through request may POST a JSON body to.
RAW_PATHS = (
    CHAT_PATH,
    COMPLETIONS_PATH,
    RESPONSES_PATH,
    EMBEDDINGS_PATH,
    MODERATIONS_PATH,
    SPEECH_PATH,
    IMAGES_PATH,
)
# ...and those it may POST a multipart/form-data body to, as the client sent it.
UPLOAD_PATHS = (TRANSCRIPTIONS_PATH, TRANSLATIONS_PATH, IMAGE_EDITS_PATH)
# What is too long when the upstream says the context is: the field of the client's
# request that holds the prompt (`input` for a question to /callChatGPT).
PROMPT_FIELDS = {
    CHAT_PATH: "messages",
    COMPLETIONS_PATH: "prompt",
    RESPONSES_PATH: "input",
    EMBEDDINGS_PATH: "input",
    MODERATIONS_PATH: "input",
    SPEECH_PATH: "input",
    IMAGES_PATH: "prompt",
    TRANSCRIPTIONS_PATH: "file",
    TRANSLATIONS_PATH: "file",
    IMAGE_EDITS_PATH: "prompt",
}
# A stored response's routes (`call_raw`): `/responses/{id}` and what follows it.
RESPONSE_ROUTES = ("", "/input_items", "/cancel")
# A response id as OpenAI makes them (`resp_` and hex); other servers' ids are word characters.
RESPONSE_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")
