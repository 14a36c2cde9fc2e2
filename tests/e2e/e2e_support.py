"""What several end-to-end tests ask the real model: one question whose answer is known
("Paris"), and the plain chat body that asks it of ``smollm2``."""

from __future__ import annotations

from typing import Any

PARIS_QUESTION = "What is the capital of France? Answer in one sentence."

QUESTION: dict[str, Any] = {
    "model": "smollm2",
    "messages": [{"role": "user", "content": PARIS_QUESTION}],
    "max_tokens": 24,
    "temperature": 0,
}
