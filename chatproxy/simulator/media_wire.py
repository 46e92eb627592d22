"""OpenAI's audio and image shapes for the simulator: fake but well-formed, and deterministic.

Pure functions (the routes are `chatproxy.simulator.media_routes`), after the
OpenAI API reference ("Audio", "Images") and the `openai` SDK's types
(`types/audio/transcription*.py`, `speech_create_params.py`,
`types/images_response.py`, `image_gen_*_event.py`):

- a transcript names the uploaded file, its byte length and the start of its
  SHA-256, so a test can tell the bytes arrived intact; the audio "lasted"
  its bytes at SECONDS_PER_BYTE;
- speech is `speech_audio(text, format)`: a format's magic bytes, then bytes
  drawn from the text's hash, SPEECH_BYTES_PER_CHARACTER per character;
- an image is TINY_PNG (a valid 1×1 PNG), or a URL for `response_format: url`.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
import zlib
from typing import Any

from chatproxy.simulator import answers

TRANSCRIBE_MODELS = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
SPEECH_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
IMAGE_MODELS = ("dall-e-2", "dall-e-3", "gpt-image-1")
SECONDS_PER_BYTE = 1 / 16000  # as a 128 kbit/s MP3 plays
SPEECH_BYTES_PER_CHARACTER = 64
SPEECH_CHUNK_BYTES = 512  # the audio is sent in pieces of this size
AUDIO_TYPES = {
    "mp3": ("audio/mpeg", b"ID3\x04\x00\x00\x00\x00\x00\x00"),
    "opus": ("audio/opus", b"OggS\x00\x02"),
    "aac": ("audio/aac", b"\xff\xf1\x50\x80"),
    "flac": ("audio/flac", b"fLaC"),
    "wav": ("audio/wav", b"RIFF\x00\x00\x00\x00WAVE"),
    "pcm": ("audio/pcm", b""),
}
IMAGE_SIZES = {
    "dall-e-2": ("256x256", "512x512", "1024x1024"),
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
    "gpt-image-1": ("auto", "1024x1024", "1536x1024", "1024x1536"),
}
# gpt-image-1's output tokens for one image, by quality (OpenAI's image generation guide).
GPT_IMAGE_TOKENS = {"low": 272, "medium": 1056, "high": 4160, "auto": 1056}
IMAGE_INPUT_TOKENS = 323  # gpt-image-1's tokens for one input image (low fidelity)


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)  # 1×1, 8-bit RGBA
    pixels = zlib.compress(b"\x00\x10\xa3\x7f\xff")  # filter byte, one teal pixel
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


TINY_PNG = _png()
TINY_PNG_B64 = base64.b64encode(TINY_PNG).decode()


def transcript(filename: str, data: bytes) -> str:
    """What the simulator hears in `data`: its name, length and the start of its hash."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    return f"The file {filename} holds {len(data)} bytes of audio, sha256 {digest}."


def duration(data: bytes) -> float:
    """How long the upload "plays", in seconds (at least a tenth)."""
    return max(0.1, round(len(data) * SECONDS_PER_BYTE, 3))


def transcription_usage(model: str, text: str, seconds: float) -> dict[str, Any]:
    """OpenAI's transcription usage: `duration` for whisper-1, `tokens` for the gpt-4o ones."""
    if model == "whisper-1":
        return {"type": "duration", "seconds": max(1, round(seconds))}
    audio = max(1, round(seconds * 10))
    output = answers.count_tokens(text, "gpt-4o")
    return {
        "type": "tokens",
        "input_tokens": audio,
        "input_token_details": {"text_tokens": 0, "audio_tokens": audio},
        "output_tokens": output,
        "total_tokens": audio + output,
    }


def cues(text: str, seconds: float, vtt: bool) -> str:
    """`text` as one SRT or WebVTT cue lasting `seconds`."""
    millis = round(seconds * 1000)
    h, rest = divmod(millis, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    mark = "." if vtt else ","
    end = f"{h:02d}:{m:02d}:{s:02d}{mark}{ms:03d}"
    cue = f"00:00:00{mark}000 --> {end}\n{text}\n"
    return f"WEBVTT\n\n{cue}" if vtt else f"1\n{cue}"


def verbose(task: str, text: str, seconds: float, usage: dict[str, Any] | None) -> dict[str, Any]:
    """A `verbose_json` transcription (or translation): one segment over the whole audio."""
    segment = {
        "id": 0,
        "seek": 0,
        "start": 0.0,
        "end": seconds,
        "text": text,
        "tokens": [],
        "temperature": 0.0,
        "avg_logprob": -0.1,
        "compression_ratio": 1.0,
        "no_speech_prob": 0.01,
    }
    found = {"task": task, "language": "english", "duration": seconds, "text": text}
    found["segments"] = [segment]
    if usage is not None:
        found["usage"] = usage
    return found


def speech_audio(text: str, audio_format: str) -> bytes:
    """The simulator's "speech" of `text` in `audio_format`: its magic bytes, then
    SPEECH_BYTES_PER_CHARACTER bytes per character drawn from the text's hash."""
    _, magic = AUDIO_TYPES[audio_format]
    size = max(1, len(text)) * SPEECH_BYTES_PER_CHARACTER
    seed = hashlib.sha256(text.encode()).digest()
    return magic + (seed * (size // len(seed) + 1))[:size]


def speech_usage(text: str, audio: bytes) -> dict[str, Any]:
    """gpt-4o-mini-tts's usage for reading `text` as `audio`: text in, audio tokens out."""
    prompt = answers.count_tokens(text, "gpt-4o")
    output = max(1, len(audio) // 32)
    return {"input_tokens": prompt, "output_tokens": output, "total_tokens": prompt + output}


def image_usage(prompt: str, n: int, quality: str, input_images: int = 0) -> dict[str, Any]:
    """gpt-image-1's usage for `n` images of `quality` from `prompt` and `input_images`."""
    text = answers.count_tokens(prompt, "gpt-4o")
    images = input_images * IMAGE_INPUT_TOKENS
    output = n * GPT_IMAGE_TOKENS.get(quality, GPT_IMAGE_TOKENS["auto"])
    return {
        "input_tokens": text + images,
        "input_tokens_details": {"text_tokens": text, "image_tokens": images},
        "output_tokens": output,
        "total_tokens": text + images + output,
    }


def image_data(model: str, prompt: str, index: int, as_url: bool) -> dict[str, Any]:
    """One entry of an images response's `data`: a URL or the PNG, dall-e-3's revised prompt."""
    entry: dict[str, Any] = {}
    if as_url:
        digest = hashlib.sha256(f"{prompt}#{index}".encode()).hexdigest()[:24]
        entry["url"] = f"https://images.simulator.invalid/{digest}.png"
    else:
        entry["b64_json"] = TINY_PNG_B64
    if model == "dall-e-3":
        entry["revised_prompt"] = f"A simulated picture of: {prompt}"
    return entry


_NAME = re.compile(rb'\bname="([^"]*)"', re.IGNORECASE)
_FILENAME = re.compile(rb'\bfilename="([^"]*)"', re.IGNORECASE)


def multipart(
    content_type: str, raw: bytes
) -> tuple[dict[str, str], dict[str, list[tuple[str, bytes]]]]:
    """A multipart/form-data body's text fields and files (`{name: [(filename, bytes)]}`),
    each file's bytes exactly as sent; ValueError when it is not one."""
    found = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.lower().startswith("multipart/form-data") or found is None:
        raise ValueError("not multipart/form-data")
    delimiter = b"--" + found.group(1).encode("latin-1")
    fields: dict[str, str] = {}
    files: dict[str, list[tuple[str, bytes]]] = {}
    for part in raw.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        head, _, body = part.partition(b"\r\n\r\n")
        body = body[:-2] if body.endswith(b"\r\n") else body
        name = _NAME.search(head)
        if name is None:
            raise ValueError("a part without a name")
        filename = _FILENAME.search(head)
        key = name.group(1).decode()
        if filename is not None:
            files.setdefault(key, []).append((filename.group(1).decode(), body))
        else:
            fields.setdefault(key, body.decode())
    return fields, files
