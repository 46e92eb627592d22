"""The simulator's audio and image routes (OpenAI API reference, "Audio" and "Images").

- `POST /v1/audio/transcriptions` (multipart): the transcript of
  `media_wire.transcript`, as `json` (with `usage`), `text`, `srt`, `vtt` or
  `verbose_json` (whisper-1 only); with `stream=true` the gpt-4o models send
  `transcript.text.delta` events, word by word, then `transcript.text.done`
  with the usage (whisper-1 ignores `stream`, as OpenAI's does).
- `POST /v1/audio/translations` (multipart, whisper-1 only): the same text, "in English".
- `POST /v1/audio/speech` (JSON): `media_wire.speech_audio` in the requested
  format, sent in pieces of SPEECH_CHUNK_BYTES (half of them, then the
  connection dropped, for `fault=reset_mid_stream`), or with `stream_format: "sse"`
  (not tts-1, tts-1-hd) `speech.audio.delta` events and `speech.audio.done` with the usage.
- `POST /v1/images/generations` (JSON) and `/v1/images/edits` (multipart):
  `{"created", "data": [...], "usage"?}` (usage for gpt-image-1), or with
  `stream: true` (gpt-image-1) a partial image event per `partial_images`
  and a completed event per image, with the usage. An edit's `revised_prompt`
  names the byte sizes of the images it got.

The `[[sim: ...]]` directive of the text sent (a transcription's `prompt`,
speech's `input`, an image's `prompt`) applies as for chat (latency, delay, faults).
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from aiohttp import web

from chatproxy.simulator import media_wire as mw
from chatproxy.simulator import wire
from chatproxy.simulator.more_routes import Serving
from chatproxy.simulator.wire import ApiError


class MediaRoutes:
    """The routes of the module's doc, served by `simulator` (its plans, faults and streaming)."""

    def __init__(self, simulator: Serving) -> None:
        self.simulator = simulator

    def add_to(self, app: web.Application) -> None:
        """Add the routes to `app`."""
        app.router.add_post("/v1/audio/transcriptions", self.transcriptions)
        app.router.add_post("/v1/audio/translations", self.translations)
        app.router.add_post("/v1/audio/speech", self.speech)
        app.router.add_post("/v1/images/generations", self.generations)
        app.router.add_post("/v1/images/edits", self.edits)

    async def _upload(self, request: web.Request) -> tuple[dict[str, str], dict[str, Any]]:
        raw = await request.read()  # read once already, kept by aiohttp
        try:
            return mw.multipart(request.headers.get("Content-Type", ""), raw)
        except ValueError:
            message = "Invalid Content-Type header: expected multipart/form-data with a boundary."
            raise ApiError(400, message) from None

    async def _begin(self, request: web.Request, text: str, stream: bool) -> Any:
        """The plan of `text`'s directive, its latency waited and its fault raised;
        (plan, early answer or None)."""
        plan, _ = self.simulator._plan(text)
        early = await self.simulator._begin(request, plan, stream)
        return plan, early

    async def transcriptions(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/audio/transcriptions."""
        return await self._transcribe(request, "transcribe")

    async def translations(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/audio/translations."""
        return await self._transcribe(request, "translate")

    async def _transcribe(self, request: web.Request, task: str) -> web.StreamResponse:
        fields, files = await self._upload(request)
        model = fields.get("model")
        if not model:
            raise ApiError(400, "Missing required parameter: 'model'.", param="model")
        if model not in mw.TRANSCRIBE_MODELS or (task == "translate" and model != "whisper-1"):
            message = f"The model `{model}` does not exist or you do not have access to it."
            raise ApiError(404, message, param="model", code="model_not_found")
        if len(files.get("file", [])) != 1:
            raise ApiError(400, "Missing required parameter: 'file'.", param="file")
        filename, data = files["file"][0]
        audio_format = fields.get("response_format", "json")
        if audio_format not in ("json", "text", "srt", "verbose_json", "vtt"):
            raise ApiError(400, f"Invalid value: '{audio_format}'.", param="response_format")
        if audio_format in ("srt", "verbose_json", "vtt") and model != "whisper-1":
            message = f"response_format '{audio_format}' is not compatible with model '{model}'."
            raise ApiError(400, message, param="response_format")
        stream = fields.get("stream", "false") == "true" and model != "whisper-1"
        prompt = fields.get("prompt", "")
        plan, early = await self._begin(request, prompt, stream)
        if early is not None:
            return early
        text = mw.transcript(filename, data)
        if task == "translate":
            text = f"(In English) {text}"
        seconds = mw.duration(data)
        usage = mw.transcription_usage(model, text, seconds) if task == "transcribe" else None
        if stream:
            words = text.split(" ")
            body = [
                wire.event(
                    {"type": "transcript.text.delta", "delta": word + " " * (i < len(words) - 1)}
                )
                for i, word in enumerate(words)
            ]
            done = wire.event({"type": "transcript.text.done", "text": text, "usage": usage})
            return await self.simulator._stream(request, ([], body, [done]), plan)
        if audio_format == "text":
            return web.Response(text=text + "\n", content_type="text/plain")
        if audio_format in ("srt", "vtt"):
            kind = "text/vtt" if audio_format == "vtt" else "application/x-subrip"
            return web.Response(
                text=mw.cues(text, seconds, audio_format == "vtt"), content_type=kind
            )
        if audio_format == "verbose_json":
            answer = mw.verbose(task, text, seconds, usage)
        else:
            answer = {"text": text} if usage is None else {"text": text, "usage": usage}
        return web.json_response(answer, dumps=wire.dumps)

    async def speech(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/audio/speech: the audio in pieces, or its SSE events."""
        body = self.simulator._body(request)
        model = body.get("model")
        if model not in mw.SPEECH_MODELS:
            message = f"The model `{model}` does not exist or you do not have access to it."
            raise ApiError(404, message, param="model", code="model_not_found")
        text = body.get("input")
        if not isinstance(text, str) or not text:
            raise ApiError(400, "Missing required parameter: 'input'.", param="input")
        if body.get("voice") is None:
            raise ApiError(400, "Missing required parameter: 'voice'.", param="voice")
        audio_format = body.get("response_format") or "mp3"
        if audio_format not in mw.AUDIO_TYPES:
            raise ApiError(400, f"Invalid value: '{audio_format}'.", param="response_format")
        events = body.get("stream_format") == "sse"
        if events and model in ("tts-1", "tts-1-hd"):
            message = f"stream_format 'sse' is not supported for model '{model}'."
            raise ApiError(400, message, param="stream_format")
        # Audio too may break off midway (`reset_mid_stream`): asked as for a stream.
        plan, early = await self._begin(request, text, True)
        if early is not None:
            return early
        audio = mw.speech_audio(text, audio_format)
        size = mw.SPEECH_CHUNK_BYTES
        pieces = [audio[at : at + size] for at in range(0, len(audio), size)]
        if events:
            deltas = [
                wire.event({"type": "speech.audio.delta", "audio": base64.b64encode(p).decode()})
                for p in pieces
            ]
            usage = mw.speech_usage(text, audio)
            done = wire.event({"type": "speech.audio.done", "usage": usage})
            return await self.simulator._stream(request, ([], deltas, [done]), plan)
        content_type, _ = mw.AUDIO_TYPES[audio_format]
        response = web.StreamResponse(headers={"Content-Type": content_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        broken = plan.fault == "reset_mid_stream"
        try:
            for piece in pieces[: len(pieces) // 2] if broken else pieces:
                if plan.delay:
                    await asyncio.sleep(plan.delay)
                await response.write(piece)
            if broken and request.transport is not None:
                request.transport.abort()  # half the audio, then the connection drops
                return response
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away
        return response

    async def generations(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/images/generations."""
        body = self.simulator._body(request)
        return await self._images(request, body, [], "image_generation")

    async def edits(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/images/edits."""
        fields, files = await self._upload(request)
        images = files.get("image", []) + files.get("image[]", [])
        if not images:
            raise ApiError(400, "Missing required parameter: 'image'.", param="image")
        values: dict[str, Any] = dict(fields)
        values["stream"] = fields.get("stream") == "true"
        return await self._images(request, values, [data for _, data in images], "image_edit")

    async def _images(
        self, request: web.Request, body: dict[str, Any], inputs: list[bytes], kind: str
    ) -> web.StreamResponse:
        model = body.get("model") or "dall-e-2"
        if model not in mw.IMAGE_MODELS:
            message = f"The model `{model}` does not exist or you do not have access to it."
            raise ApiError(404, message, param="model", code="model_not_found")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise ApiError(400, "Missing required parameter: 'prompt'.", param="prompt")
        try:
            n = int(body.get("n") or 1)
        except (TypeError, ValueError):
            raise ApiError(400, "Invalid type for 'n': expected an integer.", param="n") from None
        if not 1 <= n <= 10 or (model == "dall-e-3" and n != 1):
            limit = "1" if model == "dall-e-3" else "10"
            raise ApiError(400, f"Invalid 'n': must be from 1 to {limit}.", param="n")
        size = body.get("size") or ("auto" if model == "gpt-image-1" else "1024x1024")
        if size not in mw.IMAGE_SIZES[model]:
            message = f"Invalid value: '{size}'. Supported values are: {mw.IMAGE_SIZES[model]}."
            raise ApiError(400, message, param="size")
        as_url = (body.get("response_format") or "url") == "url"
        if model == "gpt-image-1":
            if body.get("response_format") is not None:
                message = "Unknown parameter: 'response_format'."
                raise ApiError(400, message, param="response_format")
            as_url = False
        stream = body.get("stream") is True
        if stream and model != "gpt-image-1":
            raise ApiError(400, f"Streaming is not supported for model '{model}'.", param="stream")
        plan, early = await self._begin(request, prompt, stream)
        if early is not None:
            return early
        quality = str(body.get("quality") or "auto")
        usage = mw.image_usage(prompt, n, quality, len(inputs)) if model == "gpt-image-1" else None
        if inputs:
            sizes = ", ".join(str(len(data)) for data in inputs)
            prompt = f"{prompt} (edited from images of {sizes} bytes)"
        data = [mw.image_data(model, prompt, index, as_url) for index in range(n)]
        if inputs:
            for entry in data:
                entry["revised_prompt"] = prompt
        created = int(time.time())
        if stream:
            return await self._image_events(request, kind, data, usage, body, created, plan)
        answer: dict[str, Any] = {"created": created, "data": data}
        if usage is not None:
            answer.update(usage=usage, size=size, quality=quality, output_format="png")
            answer["background"] = "opaque"
        await asyncio.sleep(plan.delay)
        return web.json_response(answer, dumps=wire.dumps)

    async def _image_events(
        self,
        request: web.Request,
        kind: str,
        data: list[dict[str, Any]],
        usage: dict[str, Any] | None,
        body: dict[str, Any],
        created: int,
        plan: Any,
    ) -> web.StreamResponse:
        """gpt-image-1's stream: `partial_images` partial events, then one completed per image
        (the usage split among them, so that it sums to the whole)."""
        common = {
            "background": "opaque",
            "created_at": created,
            "output_format": "png",
            "quality": str(body.get("quality") or "auto"),
            "size": str(body.get("size") or "1024x1024"),
        }
        partials = min(3, max(0, int(body.get("partial_images") or 0)))
        events: list[bytes] = []
        for index in range(partials):
            partial: dict[str, Any] = {
                "type": f"{kind}.partial_image",
                "partial_image_index": index,
            }
            partial["b64_json"] = mw.TINY_PNG_B64
            events.append(_named(partial, common))
        done: list[bytes] = []
        for index, _ in enumerate(data):
            share = _share(usage, index, len(data)) if usage is not None else None
            completed = {"type": f"{kind}.completed", "b64_json": mw.TINY_PNG_B64, "usage": share}
            done.append(_named(completed, common))
        return await self.simulator._stream(request, ([], events, done), plan)


def _named(data: dict[str, Any], common: dict[str, Any]) -> bytes:
    """An image stream's event: its `event:` line and its data (OpenAI sends both)."""
    return f"event: {data['type']}\n".encode() + wire.event({**data, **common})


def _share(usage: dict[str, Any], index: int, count: int) -> dict[str, Any]:
    """The `index`th of `count` parts of `usage`: input on the first, output split evenly."""
    output = usage["output_tokens"] // count
    first = index == 0
    inputs = usage["input_tokens"] if first else 0
    details = usage["input_tokens_details"] if first else {"text_tokens": 0, "image_tokens": 0}
    return {
        "input_tokens": inputs,
        "input_tokens_details": details,
        "output_tokens": output,
        "total_tokens": inputs + output,
    }
