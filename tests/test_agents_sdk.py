"""The OpenAI Agents SDK (`openai-agents`), with its defaults (the Responses API), runs an agent
through chatproxy: whole (`Runner.run`) and streamed (`Runner.run_streamed`)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from agents import Agent, OpenAIProvider, RunConfig, Runner
from openai import AsyncOpenAI
from openai.types.responses import ResponseTextDeltaEvent

from chatproxy.access.keys import issue_key
from tests.conftest import serve
from tests.test_responses_api import charged

MODEL = "gpt-4o-mini"


@pytest.fixture(scope="module")
def server(make_app):  # type: ignore[no-untyped-def]
    with serve(make_app(CHATPROXY_AUTH="keys", CHATPROXY_MODELS=MODEL)) as live:
        yield live


def agent_for(server, key: str) -> tuple[Agent, RunConfig]:  # type: ignore[no-untyped-def]
    """An agent and the run's settings: the SDK's own provider (the Responses API by default)
    with chatproxy as its base URL; tracing off, else it would send spans to OpenAI."""
    client = AsyncOpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    agent = Agent(name="Assistant", instructions="Answer in one line.", model=MODEL)
    config = RunConfig(model_provider=OpenAIProvider(openai_client=client), tracing_disabled=True)
    return agent, config


def new_key(server) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    name = f"agent-{uuid.uuid4().hex[:10]}"
    with server.app.app_context():
        return name, issue_key(name)


def test_an_agent_runs_through_chatproxy(server):
    name, key = new_key(server)
    agent, config = agent_for(server, key)
    result = asyncio.run(Runner.run(agent, "谁赢了2022年世界杯?", run_config=config))
    assert "阿根廷" in result.final_output
    assert charged(server, name, MODEL)[0] == 1


def test_a_streamed_agent_runs_through_chatproxy(server):
    name, key = new_key(server)
    agent, config = agent_for(server, key)

    async def run() -> tuple[str, str]:
        streamed = Runner.run_streamed(agent, "write a haiku", run_config=config)
        deltas = []
        async for event in streamed.stream_events():
            if event.type == "raw_response_event" and isinstance(
                event.data, ResponseTextDeltaEvent
            ):
                deltas.append(event.data.delta)
        return "".join(deltas), streamed.final_output

    text, final = asyncio.run(run())
    assert text and text == final
    assert charged(server, name, MODEL)[0] == 1
