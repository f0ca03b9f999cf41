"""The web chat page of ``elmd-sdk serve`` in headless Chromium, against a server over the tiny chain.

Skipped only where the ``playwright`` package or a Chromium executable (``ELMD_CHROMIUM``, /usr/bin/chromium or
``chromium`` on PATH) is missing.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from serve_fakes import running_server, tiny_chain

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
TIMEOUT_MS = 20_000
# Records each new text of the newest bot reply as the page renders it: a streamed reply shows several.
RECORD_TEXTS = """
window.replyTexts = [];
new MutationObserver(() => {
  const texts = document.querySelectorAll(".bot .text");
  const text = texts.length ? texts[texts.length - 1].textContent : "";
  if (text && text !== window.replyTexts.at(-1)) window.replyTexts.push(text);
}).observe(document, { subtree: true, childList: true, characterData: true });
"""


def chromium_path() -> str | None:
    candidates = [os.environ.get("ELMD_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")]
    return next((path for path in candidates if path and os.access(path, os.X_OK)), None)


def api(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """GET ``url`` (POST ``body`` as JSON when given): the HTTP status and the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium: set ELMD_CHROMIUM or install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def served_chain() -> Any:
    """The tiny chain, each decode step slowed to 40 ms: the reply's tokens arrive apart in time, as a real model's
    do, so the page renders several states of it even on a loaded machine."""
    chain = tiny_chain()
    chain.chat_model.hf_model.register_forward_pre_hook(
        lambda _module, _args, kwargs: time.sleep(0.04) if kwargs["input_ids"].shape[1] == 1 else None,
        with_kwargs=True,
    )
    return chain


@pytest.fixture(scope="module")
def base_url(served_chain: Any) -> Iterator[str]:
    with running_server(served_chain) as url:
        yield url


@contextmanager
def open_page(browser: Any, url: str) -> Iterator[Any]:
    """The chat page of the server at ``url`` in a fresh browser context; fails on any uncaught script error."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.add_init_script(RECORD_TEXTS)
    script_errors: list[Any] = []
    page.on("pageerror", lambda error: script_errors.append(error))
    page.goto(f"{url}/")
    yield page
    context.close()
    assert script_errors == []


@pytest.fixture
def page(browser: Any, base_url: str) -> Iterator[Any]:
    with open_page(browser, base_url) as page:
        yield page


def send(page: Any, text: str) -> tuple[dict[str, Any], Any]:
    """Sends ``text`` and waits for the end of its reply: the request body the page posted, and the reply element."""
    done = page.locator(".bot[data-done=true]")
    index = done.count()
    page.evaluate("window.replyTexts = []")
    page.fill("#message", text)
    with page.expect_request(lambda request: request.url.endswith("/v1/chat/completions")) as request:
        page.click("#send")
    done.nth(index).wait_for()
    return request.value.post_data_json, done.nth(index)


def test_reply_streams_with_its_emotion_and_probability_bars(page: Any, base_url: str, served_chain: Any) -> None:
    labels = list(served_chain.labels)
    _, models = api(f"{base_url}/v1/models")
    model = models["data"][0]
    expect_options = ["auto", *labels]
    page.wait_for_function(f"[...document.querySelectorAll('#emotion option')].length === {len(expect_options)}")
    assert page.locator("#emotion option").evaluate_all("nodes => nodes.map(n => n.value)") == expect_options
    assert page.locator("#video").is_disabled() == (not model["video"])
    page.fill("#background", "Two old friends meet at a cafe.")

    body, bot = send(page, "I finally got the job I wanted!")

    messages = [{"role": "user", "content": "I finally got the job I wanted!"}]
    assert body == {"model": model["id"], "messages": messages, "stream": True,
                    "background": "Two old friends meet at a cafe."}  # fmt: skip
    emotion = bot.locator(".emotion").inner_text()
    assert emotion in labels
    names = bot.locator(".bar .name").all_inner_texts()
    assert sorted(names) == sorted(labels)
    assert bot.locator(".bar.chosen .name").all_inner_texts() == [emotion]
    widths = bot.locator(".bar .fill").evaluate_all("nodes => nodes.map(n => parseFloat(n.style.width))")
    assert sum(widths) == pytest.approx(100, abs=0.5)
    text = bot.locator(".text").text_content()
    assert text.strip() != ""
    texts = page.evaluate("window.replyTexts")
    assert len(texts) >= 2, f"the reply was not streamed: the page showed only {texts}"
    assert texts[-1] == text and all(text.startswith(part) for part in texts)
    # The same request without streaming: greedy decoding gives the same reply, emotion and probabilities.
    status, answer = api(f"{base_url}/v1/chat/completions", {**body, "stream": False})
    assert status == 200
    message = answer["choices"][0]["message"]
    assert (emotion, text) == (message["emotion"], message["content"])
    cut_at_the_limit = answer["choices"][0]["finish_reason"] == "length"
    assert ("cut" in bot.get_attribute("class").split()) == cut_at_the_limit
    assert widths == pytest.approx([100 * message["emotion_scores"][name] for name in names], abs=0.051)


def test_the_users_emotion_shows_on_their_message(page: Any, base_url: str, served_chain: Any) -> None:
    body, _ = send(page, "I finally got the job I wanted!")
    user = page.locator(".user[data-done=true]").last
    user.wait_for()
    choices = [{"value": label} for label in served_chain.labels]
    question = {"type": "choice", "name": "utterance_emotion", "instructions": "-", "choices": choices}
    status, decision = api(f"{base_url}/v1/decisions", {"model": body["model"], "input": body["messages"],
                                                         "questions": [question]})  # fmt: skip
    assert status == 200
    answer = decision["answers"][0]
    assert user.locator(".emotion").inner_text() == answer["choice"] == "happy"  # the fixed retriever's vote
    names = user.locator(".bar .name").all_inner_texts()
    assert names == list(served_chain.labels) and user.locator(".bar.chosen .name").all_inner_texts() == ["happy"]
    widths = user.locator(".bar .fill").evaluate_all("nodes => nodes.map(n => parseFloat(n.style.width))")
    assert widths == pytest.approx([100 * p["probability"] for p in answer["probabilities"]], abs=0.051)


def test_forced_emotion_history_and_new_conversation(page: Any, served_chain: Any) -> None:
    first, bot = send(page, "I finally got the job I wanted!")
    predicted = bot.locator(".emotion").inner_text()
    forced = next(label for label in served_chain.labels if label != predicted)
    page.select_option("#emotion", forced)

    second, bot = send(page, "But I'm scared I won't be good enough.")

    reply = {"role": "assistant", "content": page.locator(".bot .text").first.text_content()}
    user = {"role": "user", "content": "But I'm scared I won't be good enough."}
    assert second["messages"] == [*first["messages"], reply, user]
    assert second["emotion"] == forced
    assert bot.locator(".emotion").inner_text() == forced
    assert bot.locator(".bar.chosen .name").all_inner_texts() == [forced]

    page.click("#new")
    assert page.locator("#conversation > *").count() == 0
    third, _ = send(page, "Hello again.")
    assert third["messages"] == [{"role": "user", "content": "Hello again."}]


def test_video_clip_goes_as_base64_and_a_chat_error_shows(page: Any, tmp_path: Path) -> None:
    def models_with_video(route: Any) -> None:
        response = route.fetch()
        answer = response.json()
        answer["data"][0]["video"] = True
        route.fulfill(response=response, json=answer)

    too_big = {"error": {"message": "The video is too big.", "type": "invalid_request_error", "param": "video",
                         "code": None}}  # fmt: skip
    page.route("**/v1/models", models_with_video)
    page.route("**/v1/chat/completions", lambda route: route.fulfill(status=413, json=too_big))
    page.reload()
    page.wait_for_function("!document.getElementById('video').disabled")
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(bytes(range(256)) * 3)
    page.set_input_files("#video", str(clip))
    page.fill("#message", "Look at this.")
    with page.expect_request(lambda request: request.url.endswith("/v1/chat/completions")) as request:
        page.click("#send")
    page.locator("#error").wait_for()

    assert request.value.post_data_json["video"] == {"data": base64.b64encode(clip.read_bytes()).decode(),
                                                     "filename": "clip.mp4"}  # fmt: skip
    assert page.locator("#error").inner_text() == "Error: The video is too big. (HTTP 413)"
    assert page.locator("#conversation > *").count() == 0
    assert page.input_value("#message") == "Look at this."


def test_api_key_error_is_shown_until_the_key_is_given(browser: Any) -> None:
    with running_server(tiny_chain(), api_key="sesame") as url, open_page(browser, url) as page:
        status, answer = api(f"{url}/v1/models")
        assert status == 401
        error = page.locator("#error")
        error.wait_for()
        assert answer["error"]["message"] in error.inner_text()

        page.fill("#message", "Hello?")
        page.click("#send")
        page.wait_for_function("!document.querySelector('#send').disabled")
        assert answer["error"]["message"] in error.inner_text()
        assert page.locator("#conversation > *").count() == 0
        assert page.input_value("#message") == "Hello?"

        page.fill("#api-key", "sesame")
        page.press("#api-key", "Tab")
        error.wait_for(state="hidden")
        body, bot = send(page, "Hello?")
        assert body["messages"] == [{"role": "user", "content": "Hello?"}]
        assert bot.locator(".text").text_content().strip() != ""
        page.reload()
        assert page.input_value("#api-key") == "sesame"
