"""What happens when a conversation reaches the model's context window: CONTEXT_STRATEGY.

- reset: the request holds no history, and once the answer arrives the history is dropped.
- trim: the request leaves out the oldest whole turns (a user message with what answered it) until
  the new message fits; once the answer arrives they are dropped. The system prompt and the latest
  turns stay.
- summarize: the older part is summarised by a model (the bot's own request, never shown as an
  answer); the request holds that summary as a marked system note plus the latest turns verbatim,
  and once the answer arrives the note replaces the older part. A later summary folds in the
  earlier one and every summary is capped in tokens, so it never grows without bound. When the
  summary cannot be had, the turn trims instead.

Plans work on the token counts cached on each message: nothing is re-encoded, and a plan costs in
proportion to what it leaves out, not to the length of the history. Nothing here does I/O or
changes a conversation before `apply`: `chat.py` sends the requests and applies a plan only once
the answer has arrived, so a failed request never loses history.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from config import Strategy
from sessions import Conversation, Message
from tokens import REPLY_PRIMING

if TYPE_CHECKING:
    from models import ModelInfo

SUMMARY_MARK = "[Summary of the earlier part of this conversation]"
MAX_SUMMARY_TOKENS = 1024
MIN_SUMMARY_TOKENS = 32  # below this a summary says too little to be worth a request: trim instead
# After a summary the verbatim turns take at most this share of the room the history has, so the
# conversation can go on for a while before the next summary.
KEEP_SHARE = 0.5
SUMMARY_INSTRUCTION = (
    "You condense conversations between a user and an AI assistant so that the assistant can go on "
    "without the full transcript. Summarise the transcript you are given: the facts, names, numbers, "
    "decisions, preferences, code and open questions that matter for continuing, and what the "
    "assistant has already answered. If it begins with an earlier summary, fold that in. Write in the "
    "language of the conversation, as short plain sentences or bullet points, in at most {words} "
    "words. Output only the summary.")
_LABELS = {"user": "User", "assistant": "Assistant"}


class Action(enum.Enum):
    KEEP = "keep"  # everything fits
    RESET = "reset"
    TRIM = "trim"
    SUMMARIZE = "summarize"


@dataclass(frozen=True)
class Policy:
    """The strategy in force, and the model that writes summaries (None: the conversation's own)."""

    strategy: Strategy = Strategy.RESET
    summary_model: ModelInfo | None = None


@dataclass(frozen=True)
class Plan:
    """Which part of the history a request holds: `history[keep_from:end]` (after a summary note)."""

    action: Action
    keep_from: int = 0
    dropped_tokens: int = 0  # of history[:keep_from]
    summary_tokens: int = 0  # SUMMARIZE: the cap on the summary's length
    trim_from: int = 0  # SUMMARIZE: where trimming would start, should the summary fail
    trim_tokens: int = 0  # of history[:trim_from]

    def trimmed(self) -> Plan:
        """The trim this summarising plan falls back to."""
        return Plan(Action.TRIM, self.trim_from, self.trim_tokens)


def plan(strategy: Strategy, history: Sequence[Message], end: int, history_tokens: int, fixed: int,
         budget: int, note_overhead: int = 0) -> Plan | None:
    """How a request fits `budget` tokens; None when the new message does not fit even alone.

    `history[:end]` is the conversation before the new message, `history_tokens` their tokens, and
    `fixed` the system prompt, the new message and the reply priming. `note_overhead` is what a
    summary note costs beyond its text (its mark and the message framing).
    """
    if fixed > budget:
        return None
    if fixed + history_tokens <= budget:
        return Plan(Action.KEEP)
    if strategy is Strategy.RESET:
        return Plan(Action.RESET, end, history_tokens)
    trim_from, trim_tokens = turn_start(history, end, fixed + history_tokens - budget)
    if strategy is Strategy.TRIM:
        return Plan(Action.TRIM, trim_from, trim_tokens)
    room = budget - fixed
    cap = min(MAX_SUMMARY_TOKENS, room // 4)
    if cap < MIN_SUMMARY_TOKENS:
        return Plan(Action.TRIM, trim_from, trim_tokens)
    keep = max(0, int((room - cap - note_overhead) * KEEP_SHARE))
    split, dropped = turn_start(history, end, history_tokens - keep)
    return Plan(Action.SUMMARIZE, split, dropped, cap, trim_from, trim_tokens)


def turn_start(history: Sequence[Message], end: int, need: int) -> tuple[int, int]:
    """The first turn (within `history[:end]`) from which on the history leaves out at least `need`
    tokens, and the tokens left out. Never splits a turn: a turn starts at a user message."""
    if need <= 0:
        return 0, 0
    index, dropped = 0, 0
    while index < end and (dropped < need or history[index].role != "user"):
        dropped += history[index].tokens
        index += 1
    return index, dropped


def summary_source(history: Sequence[Message], plan: Plan, limit: int) -> tuple[list[Message], int]:
    """What a summary reads: `history[:plan.keep_from]` and its tokens, the oldest turns left out
    when that exceeds `limit` (the summary model's room). An earlier summary is always read."""
    split, total = plan.keep_from, plan.dropped_tokens
    earlier = history[0] if split and is_summary(history[0]) else None
    kept = earlier.tokens if earlier is not None else 0
    start = 1 if earlier is not None else 0
    if total > limit:
        skip, skipped = turn_start(history, split, total - limit + kept)
        start, total = max(start, skip), total - skipped + kept
    source = [earlier] if earlier is not None else []
    return source + [history[i] for i in range(start, split)], total


def summary_instruction(cap: int) -> str:
    """The summary request's system message, for a summary of at most `cap` tokens."""
    return SUMMARY_INSTRUCTION.format(words=max(20, cap * 3 // 5))  # ~0.75 words a token, and a margin


def summary_messages(source: Sequence[Message], cap: int) -> list[dict[str, object]]:
    """The summary request: the instruction, then the transcript as one user message."""
    transcript = "\n\n".join(_transcript_line(m) for m in source)
    return [{"role": "system", "content": summary_instruction(cap)}, {"role": "user", "content": transcript}]


def summary_limit(model: ModelInfo, cap: int, instruction_tokens: int) -> int:
    """Tokens of transcript the summary model can read beside the instruction and the summary."""
    return model.context_window - min(cap, model.max_output) - instruction_tokens - REPLY_PRIMING - 8


def note_text(summary: str) -> str:
    """The system note that stands for the summarised part of the conversation."""
    return f"{SUMMARY_MARK}\n{summary.strip()}"


def is_summary(message: Message) -> bool:
    return message.role == "system" and message.content.startswith(SUMMARY_MARK)


def summary_body(message: Message) -> str:
    """A summary note's text without its mark."""
    return message.content.removeprefix(SUMMARY_MARK).strip()


def apply(conversation: Conversation, plan: Plan, note: Message | None = None) -> None:
    """Make the history what the request held (called once the answer has arrived)."""
    if plan.action is Action.RESET:
        conversation.drop_first(plan.keep_from)
        conversation.warned = conversation.trimmed = False  # a fresh start: its notices may come again
    elif plan.action is Action.TRIM:
        conversation.drop_first(plan.keep_from)
    elif plan.action is Action.SUMMARIZE and note is not None:
        conversation.replace_first(plan.keep_from, note)


def last_user_index(messages: Sequence[Message]) -> int | None:
    """Where the latest turn starts (its user message), for /retry."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            return index
    return None


def _transcript_line(message: Message) -> str:
    if is_summary(message):
        return f"Earlier summary: {summary_body(message)}"
    images = f" [{len(message.images)} image(s) attached]" if message.images else ""
    return f"{_LABELS.get(message.role, message.role.title())}: {message.content}{images}"
