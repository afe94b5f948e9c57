"""``ScriptedLLM``: a CrewAI LLM that answers from a script, to run a crew offline (tests, examples).

Each turn of the script is either a string (the final answer) or a list of tool calls
``(tool_name, args)``, which CrewAI runs the way it runs a real model's function calls (several
calls in one turn run in parallel threads). A script can also be a function ``messages -> turn``,
for a model that reacts to what its tools returned. With ``native=False`` the model has no
function calling and answers in CrewAI's text (ReAct) format instead, one tool call per turn, named
by the tool's display name (``File Writer Tool``). No network, no API key.

This module imports crewai.
"""

from __future__ import annotations

import itertools
import json
import threading
from types import SimpleNamespace
from typing import Any, Callable, Sequence, Union

from crewai.llms.base_llm import BaseLLM
from pydantic import ConfigDict, PrivateAttr

ToolCalls = Sequence[tuple[str, dict[str, Any]]]
Turn = Union[str, ToolCalls]
Script = Union[Sequence[Turn], Callable[[list[dict[str, Any]]], Turn]]

_IDS = itertools.count(1)


def tool_calls(calls: ToolCalls) -> list[SimpleNamespace]:
    """OpenAI-shaped tool-call objects (``.id``, ``.function.name``, ``.function.arguments``)."""
    return [SimpleNamespace(id=f"call_{next(_IDS)}",
                            function=SimpleNamespace(name=name, arguments=json.dumps(args)))
            for name, args in calls]


class ScriptedLLM(BaseLLM):
    """Answers each call with the next turn of ``script`` (then ``done`` for ever)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    script: Any = ()
    done: str = "done"
    native: bool = True
    _turns: list[Turn] = PrivateAttr(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, script: Script, **data: Any) -> None:
        super().__init__(model=data.pop("model", "scripted"), script=script, **data)  # type: ignore[call-arg]
        if not callable(script):
            self._turns = list(script)

    def call(self, messages: Any, tools: Any = None, callbacks: Any = None, available_functions: Any = None,
             from_task: Any = None, from_agent: Any = None, response_model: Any = None) -> Any:
        if callable(self.script):
            turn = self.script(messages if isinstance(messages, list) else [{"role": "user", "content": messages}])
        else:
            with self._lock:
                turn = self._turns.pop(0) if self._turns else self.done
        if self.native:
            return turn if isinstance(turn, str) else tool_calls(turn)
        if isinstance(turn, str):
            return f"Thought: I have the answer\nFinal Answer: {turn}"
        (name, args), = turn  # the text format has one action per turn
        return f"Thought: I use a tool\nAction: {name}\nAction Input: {json.dumps(args)}"

    def supports_function_calling(self) -> bool:
        return self.native

    def supports_stop_words(self) -> bool:
        return not self.native


def run_crew(llm: ScriptedLLM, tools: list[Any], *, role: str = "writer", output_file: str | None = None,
             **crew_options: Any) -> Any:
    """Run a one-agent, one-task crew on ``llm`` with ``tools``; returns the task's output."""
    from crewai import Agent, Crew, Task

    agent = Agent(role=role, goal="write the files", backstory="scripted", llm=llm, tools=tools,
                  verbose=False, max_iter=50)
    task = Task(description="write the files", expected_output="done", agent=agent, output_file=output_file)
    Crew(agents=[agent], tasks=[task], verbose=False, **crew_options).kickoff()
    return task.output
