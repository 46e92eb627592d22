"""Audio and image prices: the units each model is billed in, from the table or the owner's
CHATPROXY_PRICES_FILE, what an answer is charged and the worst case reserved before it."""

from __future__ import annotations

import pytest

from chatproxy.config import ConfigError
from chatproxy.media_prices import (
    images_bill,
    speech_bill,
    transcription_bill,
    worst_images,
    worst_speech,
    worst_transcription,
)
from chatproxy.tokens import PRICES, Price, load_prices


def test_a_prices_file_may_price_audio_and_image_models_in_their_units(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(
        '{"my-whisper": {"per_minute": 0.01}, "my-tts": {"per_1m_characters": 20},'
        ' "my-painter": {"per_image": {"512x512": 0.5, "hd 512x512": 1}},'
        ' "my-listener": {"input": 1, "output": 2, "media_input": 4}}'
    )
    prices = load_prices(path)
    assert prices["my-whisper"] == Price(0.0, 0.0, per_minute=0.01)
    assert prices["my-painter"].per_image == (("512x512", 0.5), ("hd 512x512", 1.0))
    bill = transcription_bill("my-whisper", b"", {"text": "hi", "duration": 90}, None, prices)
    assert bill.cost == pytest.approx(0.015)
    assert speech_bill("my-tts", "x" * 1000, 1.0, None, prices).cost == pytest.approx(0.02)
    bill = images_bill("my-painter", "cat", 2, "512x512", "hd", None, prices)
    assert bill.cost == pytest.approx(2.0)
    usage = {"type": "tokens", "input_tokens": 100, "output_tokens": 10, "total_tokens": 110}
    usage["input_token_details"] = {"audio_tokens": 80, "text_tokens": 20}
    bill = transcription_bill("my-listener", b"", None, usage, prices)
    assert bill.cost == pytest.approx((20 * 1 + 80 * 4 + 10 * 2) / 1e6) and not bill.counted


@pytest.mark.parametrize(
    "content, fault",
    [
        ('{"m": {"per_minute": -1}}', "per_minute must be a number of USD per minute"),
        ('{"m": {"per_image": 0.04}}', "per_image must be an object"),
        ('{"m": {"per_image": {"1024x1024": "x"}}}', "per_image '1024x1024' must be a number"),
        ('{"m": {"per_second": 1}}', "exactly input and output"),
        ('{"m": {"media_input": 1}}', "exactly input and output"),
    ],
)
def test_malformed_media_prices_stop_start_up(tmp_path, content, fault):
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match="CHATPROXY_PRICES_FILE") as raised:
        load_prices(path)
    assert fault in str(raised.value)


@pytest.mark.parametrize(
    "body, seconds",
    [
        (b"1\n00:00:00,000 --> 00:01:30,500\nhello\n", 90.5),
        (b"WEBVTT\n\n00:00:00.000 --> 00:02:00.000\nhello\n", 120.0),
        (" ".join(["word"] * 150).encode(), 60.0),  # the words heard, at 150 a minute
    ],
    ids=["srt", "vtt", "text"],
)
def test_whisper_text_answers_are_timed_by_their_cues_or_their_words(body, seconds):
    bill = transcription_bill("whisper-1", body, None, None, PRICES)
    assert bill.cost == pytest.approx(seconds / 60 * 0.006)
    assert bill.counted and bill.usage["completion_tokens"] > 0


def test_worst_cases_bound_what_the_answer_can_cost():
    whisper = worst_transcription("whisper-1", 25 * 1024 * 1024, PRICES)
    assert whisper.cost == pytest.approx(25 * 1024 * 1024 / 4000 / 60 * 0.006)
    speech = worst_speech("gpt-4o-mini-tts", "hello " * 100, PRICES)
    assert speech.cost > speech_bill("gpt-4o-mini-tts", "hello " * 100, 1.0, None, PRICES).cost
    dalle = worst_images("dall-e-3", "x", 1, "1792x1024", "hd", 0, PRICES)
    assert dalle.cost == pytest.approx(0.12)
    unknown_size = worst_images("dall-e-2", "x", 3, "9x9", None, 0, PRICES)
    assert unknown_size.cost == pytest.approx(3 * 0.02)  # the dearest size
    gpt_image = worst_images("gpt-image-1", "x", 2, None, None, 1, PRICES)
    assert gpt_image.cost == pytest.approx(((1 * 5) + 6240 * 10 + 2 * 6240 * 40) / 1e6)
