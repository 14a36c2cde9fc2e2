"""swapd.core.keys: pattern matching and the limiter's windows (clock values passed in)."""

from __future__ import annotations

from swapd.config.model import KeyRole
from swapd.core.keys import DAY, Family, Grant, Limiter, role_allows


def test_patterns_match_any_name_of_the_target() -> None:
    grant = Grant("k", KeyRole.INFERENCE, ("qwen*", "far/gpt-4o", "coder"))
    assert grant.covers(["qwen-7b"])
    assert grant.covers(["big", "coder"])  # an alias
    assert grant.covers(["far", "far/gpt-4o", "gpt-4o"])
    assert not grant.covers(["far", "far/gpt-5", "gpt-5"])
    assert not grant.covers(["Qwen-7b"])  # case-sensitive
    assert Grant("all", KeyRole.INFERENCE).covers(["anything"])


def test_roles_open_families_cumulatively() -> None:
    assert role_allows(KeyRole.INFERENCE, Family.INFERENCE)
    assert not role_allows(KeyRole.INFERENCE, Family.OBSERVE)
    assert role_allows(KeyRole.OBSERVER, Family.OBSERVE)
    assert not role_allows(KeyRole.OBSERVER, Family.ADMIN)
    assert role_allows(KeyRole.ADMIN, Family.ADMIN)


def test_rate_window_slides_and_says_when_to_retry() -> None:
    grant = Grant("k", KeyRole.INFERENCE, requests_per_minute=2)
    limiter = Limiter()
    assert limiter.admit(grant, 0.0, 0.0) is None
    assert limiter.admit(grant, 10.0, 0.0) is None
    assert limiter.admit(grant, 20.0, 0.0) == 40  # the first start leaves the window at 60
    assert limiter.admit(grant, 60.0, 0.0) is None
    assert limiter.admit(grant, 61.0, 0.0) == 9


def test_concurrency_and_release() -> None:
    grant = Grant("k", KeyRole.INFERENCE, max_concurrent=1)
    limiter = Limiter()
    assert limiter.admit(grant, 0.0, 0.0) is None
    assert limiter.admit(grant, 0.0, 0.0) == 1.0
    limiter.release(grant)
    assert limiter.admit(grant, 0.0, 0.0) is None


def test_token_budget_resets_at_utc_midnight() -> None:
    grant = Grant("k", KeyRole.INFERENCE, daily_tokens=100)
    limiter = Limiter()
    noon = 20_000 * DAY + DAY / 2
    assert limiter.admit(grant, 0.0, noon) is None
    limiter.release(grant)
    limiter.count_tokens("k", 100, noon)
    assert limiter.admit(grant, 0.0, noon) == DAY / 2
    assert limiter.admit(grant, 0.0, noon + DAY / 2) is None  # a new day
    assert limiter.totals()[1] == {"k": 100}
