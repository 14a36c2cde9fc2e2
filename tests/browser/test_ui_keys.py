"""The web UI with a scoped API key (docs/keys.md): it asks swapd what the key is
(``GET /api/key``) and offers only what the key may use. An observer limited to one model
sees that model, no load/unload buttons, no Config page, and only that model's log; an
admin key sees every control."""

from __future__ import annotations

from typing import Any

from conftest import model
from test_ui import expect

ROOT_KEY = "sk-ui-root"
VIEWER_KEY = "sk-ui-viewer"
USER_KEY = "sk-ui-user"
CONFIG = (
    f"apiKeys: [{ROOT_KEY}]\n"
    "keys:\n"
    "  - name: viewer\n"
    f"    secret: {VIEWER_KEY}\n"
    "    role: observer\n"
    "    models: [beta]\n"
    "  - name: user\n"
    f"    secret: {USER_KEY}\n"
    "    models: [alpha]\n"
    "groups:\n  both:\n    swap: false\n    members: [alpha, beta]\n"
    "models:\n" + model("alpha") + model("beta")
)


def open_with_key(open_page: Any, swapd: Any, key: str, path: str, connection: str = "open") -> Any:
    page, _ = open_page()
    page.add_init_script(f"sessionStorage.setItem('swapd.apiKey', {key!r})")
    page.goto(f"{swapd.url}{path}")
    expect(page.locator("#conn")).to_have_attribute("data-state", connection)
    return page


def test_a_scoped_observer_sees_its_model_and_no_admin_controls(
    start_swapd: Any, open_page: Any, artifacts: Any
) -> None:
    swapd = start_swapd(CONFIG)
    with swapd.client(ROOT_KEY) as client:
        for name in ("alpha", "beta"):
            client.post(f"/api/models/load/{name}").raise_for_status()

    page = open_with_key(open_page, swapd, VIEWER_KEY, "/ui/models")
    expect(page.locator("html")).to_have_attribute("data-role", "observer")
    beta = page.locator("tr[data-model=beta]")
    expect(beta.locator(".badge")).to_have_text("ready")
    expect(page.locator("tr[data-model=alpha]")).to_have_count(0)  # not its model
    expect(beta.locator("button[data-action=unload]")).to_have_count(1)
    expect(beta.locator("button[data-action=unload]")).to_be_hidden()  # admin only
    expect(page.locator(".nav a[data-page=config]")).to_be_hidden()
    expect(page.locator(".nav a[data-page=logs]")).to_be_visible()
    page.screenshot(path=str(artifacts / "keys-observer.png"), full_page=True)

    # the logs page offers its model's own output only (swapd's log would be 403)
    page.locator(".nav a[data-page=logs]").click()
    select = page.get_by_label("Log source")
    expect(select.locator("option[value=proxy]")).to_have_count(0)
    expect(select.locator("option[value=alpha]")).to_have_count(0)
    expect(page.locator("pre.log")).to_contain_text("demo upstream beta listening")

    admin = open_with_key(open_page, swapd, ROOT_KEY, "/ui/models")
    expect(admin.locator("html")).to_have_attribute("data-role", "admin")
    expect(admin.locator("tr[data-model=alpha] button[data-action=unload]")).to_be_visible()
    expect(admin.locator(".nav a[data-page=config]")).to_be_visible()


def test_an_inference_key_gets_its_models_and_the_playground_only(
    start_swapd: Any, open_page: Any
) -> None:
    swapd = start_swapd(CONFIG)
    # the event feed is closed to an inference key: the page lists its models once instead
    page = open_with_key(open_page, swapd, USER_KEY, "/ui/models", connection="list")
    expect(page.locator("html")).to_have_attribute("data-role", "inference")
    expect(page.locator("tr[data-model=alpha]")).to_have_count(1)
    expect(page.locator("tr[data-model=beta]")).to_have_count(0)
    expect(page.locator("tr[data-model=alpha] button[data-action=load]")).to_be_hidden()
    for hidden in ("logs", "activity", "config"):
        expect(page.locator(f".nav a[data-page={hidden}]")).to_be_hidden()
    page.locator(".nav a[data-page=playground]").click()
    page.get_by_label("Message").fill("hi")
    page.get_by_label("Message").press("Enter")
    expect(page.locator(".msg-assistant .msg-body")).to_have_text(
        "Hello from the swapd demo upstream.", timeout=15_000
    )
