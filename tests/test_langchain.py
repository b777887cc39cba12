"""LangChain and LangGraph around macsql: any chat model as the backend (ChatOpenAI against a loopback
OpenAI-compatible server), `Pipeline.as_tool()` called by a LangGraph prebuilt tool-calling agent, the async
entry points, and the graph's one-line error when it is invoked without its context."""

import asyncio
import json
from pathlib import Path

import pytest

pytest.importorskip("langchain_core", reason="the [langchain] extra: pip install -e '.[langchain]'")

from langchain_core.language_models.chat_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402

from macsql.backends import make_llm  # noqa: E402
from macsql.backends.base import ScriptedLLM  # noqa: E402
from macsql.backends.langchain import LangChainLLM  # noqa: E402
from macsql.demo import DEMO_SQL, build  # noqa: E402
from macsql.errors import InputError, ModelError  # noqa: E402
from macsql.pipeline import Pipeline  # noqa: E402
from tests.conftest import demo_reply, spain_count  # noqa: E402

SPAIN = "How many customers live in Spain?"
SPAIN_SQL = "SELECT COUNT(*) AS customers FROM customers WHERE country = 'Spain'"


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory) -> Path:
    return build(DEMO_SQL, tmp_path_factory.mktemp("demo") / "shop.sqlite")


def test_chat_openai_drives_the_pipeline(openai_server, demo_db):
    openai = pytest.importorskip("langchain_openai")
    url, requests = openai_server(lambda body: demo_reply(body["messages"], ""))
    chat = openai.ChatOpenAI(model="m", base_url=url, api_key="test", max_retries=0)

    answer = Pipeline(LangChainLLM(chat)).ask(SPAIN, demo_db)
    assert answer.sql == SPAIN_SQL and answer.rows == [[spain_count(demo_db)]] and answer.error is None
    # token counts come from the replies' usage_metadata (the server reports 42 prompt, 7 completion tokens)
    assert answer.prompt_tokens == 42 * answer.llm_calls and answer.completion_tokens == 7 * answer.llm_calls
    body = requests[0][1]
    assert body["messages"][0]["role"] == "system" and body["messages"][-1]["role"] == "user"
    assert body["temperature"] == 0.0  # the greedy queries are greedy, whatever the model's own setting

    llm = make_llm(backend="langchain", chat_model=chat)  # the registry's way to the same backend
    assert isinstance(llm, LangChainLLM) and llm.name == "m"


def test_langchain_backend_needs_a_chat_model():
    with pytest.raises(ModelError, match="takes a chat model object"):
        make_llm(backend="langchain")
    with pytest.raises(ModelError, match="LangChain chat model"):
        LangChainLLM({"role": "user"})


class ToolCallingModel(BaseChatModel):
    """A scripted tool-calling chat model: first it calls `ask_database`, then it reports what the tool
    returned. What a real model does in a LangGraph agent, with no model."""

    @property
    def _llm_type(self) -> str:
        return "scripted-tool-caller"

    def bind_tools(self, tools, **kwargs):
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        last = messages[-1]
        if isinstance(last, ToolMessage):
            reply = json.loads(last.content)
            message = AIMessage(content=f"{reply['rows'][0][0]} customers live in Spain ({reply['sql']})")
        else:
            message = AIMessage(content="", tool_calls=[{"name": "ask_database", "id": "call-1",
                                                         "args": {"question": last.content, "db": "demo"}}])
        return ChatResult(generations=[ChatGeneration(message=message)])


def test_as_tool_is_called_by_a_langgraph_agent(demo_db):
    pytest.importorskip("langgraph.prebuilt")
    import warnings

    from langgraph.prebuilt import create_react_agent

    tool = Pipeline(ScriptedLLM(demo_reply)).as_tool({"demo": demo_db})
    assert tool.name == "ask_database" and set(tool.args) == {"question", "db", "evidence"}
    with warnings.catch_warnings():  # create_react_agent is deprecated in favour of langchain's create_agent
        warnings.simplefilter("ignore")
        agent = create_react_agent(ToolCallingModel(), [tool])
    state = agent.invoke({"messages": [HumanMessage(SPAIN)]})
    tool_reply = next(m for m in state["messages"] if isinstance(m, ToolMessage))
    assert json.loads(tool_reply.content)["sql"] == SPAIN_SQL
    assert state["messages"][-1].content == f"{spain_count(demo_db)} customers live in Spain ({SPAIN_SQL})"


def test_tool_errors_go_back_to_the_calling_model(demo_db):
    tool = Pipeline(ScriptedLLM(demo_reply)).as_tool({"demo": demo_db})
    assert "unknown database 'dmo' (did you mean 'demo'?)" in tool.invoke({"question": SPAIN, "db": "dmo"})
    assert "at most 4,096" in tool.invoke({"question": "x" * 5000, "db": "demo"})
    single = Pipeline(ScriptedLLM(demo_reply)).as_tool(demo_db)  # one database: named after its file
    assert single.invoke({"question": SPAIN})["rows"] == [[spain_count(demo_db)]]


def test_aask_astream_and_the_async_tool(demo_db):
    pipeline = Pipeline(ScriptedLLM(demo_reply))

    async def go():
        answer = await pipeline.aask(SPAIN, demo_db)
        steps = [node async for node, _ in pipeline.astream(SPAIN, demo_db)]
        via_tool = await pipeline.as_tool({"demo": demo_db}).ainvoke({"question": SPAIN, "db": "demo"})
        return answer, steps, via_tool

    answer, steps, via_tool = asyncio.run(go())
    assert answer.sql == SPAIN_SQL and answer.rows == [[spain_count(demo_db)]]
    assert steps[:4] == ["schema", "selector", "render", "decomposer"] and steps[-2:] == ["vote", "answer"]
    assert via_tool["rows"] == answer.rows


def test_graph_without_its_context_says_how_to_give_it():
    from macsql.graph import build_graph

    with pytest.raises(InputError, match=r"the graph needs its context, got NoneType: call graph.invoke\("):
        build_graph().invoke({"question": SPAIN})
