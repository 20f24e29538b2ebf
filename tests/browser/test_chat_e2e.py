"""Two people chat in real Chromium against a real daphne server.

Each person is a browser context of their own. They sign up, one creates a
room and the other finds it in the directory, and they see each other's
messages arrive without reloading, through a dropped connection, a server
crash and a message the channel layer lost.
"""

import json
import os
import re
import signal
from pathlib import Path

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

PASSWORD = "browser-pass-phrase"
LIVE_TIMEOUT = 5_000
# Reconnecting waits up to 10 s between tries once the backoff is at its cap.
RECONNECT_TIMEOUT = 20_000


def sign_up(page, server, username: str, display_name: str) -> None:
    page.goto(f"{server.url}/accounts/signup/")
    page.fill("#id_username", username)
    page.fill("#id_display_name", display_name)
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.click("#signup-form button[type=submit]")
    expect(page).to_have_url(f"{server.url}/")
    expect(page.locator("#current-user")).to_have_text(display_name)


def create_room(page, name: str, topic: str = "") -> None:
    page.click("#create-link")
    page.fill("#id_name", name)
    page.check("input[name=kind][value=public]")
    page.fill("#id_topic", topic)
    page.click("#create-room-form button[type=submit]")
    expect(page.locator("#room-title")).to_have_text(name)


def join_from_directory(page, name: str, members_before: str) -> None:
    page.click("#nav-directory")
    row = page.locator(f".directory-room[data-room-name='{name}']")
    expect(row.locator(".member-count")).to_have_text(members_before)
    row.locator("button.join-room").click()
    expect(page.locator("#room-title")).to_have_text(name)


def expect_connected(page, timeout: int = LIVE_TIMEOUT) -> None:
    expect(page.locator("#connection-status")).to_have_attribute("data-state", "connected", timeout=timeout)
    expect(page.locator("#connection-status")).to_have_text("Connected")


def send(page, text: str) -> None:
    page.fill("#message-body", text)
    page.press("#message-body", "Enter")


def shown(page) -> list[tuple[int, str, str]]:
    """(seq, author, body) of every stored message on the page, top to bottom."""
    return [
        tuple(row)
        for row in page.eval_on_selector_all(
            "#messages > .message[data-seq]",
            """items => items.map(item => [
                Number(item.dataset.seq),
                item.querySelector('.message-author').textContent,
                item.querySelector('.message-body').textContent,
            ])""",
        )
    ]


def expect_messages(page, expected: list[tuple[int, str, str]], timeout: int = LIVE_TIMEOUT) -> None:
    expect(page.locator("#messages > .message[data-seq]")).to_have_count(len(expected), timeout=timeout)
    expect(page.locator("#messages > .message.pending")).to_have_count(0, timeout=timeout)
    assert shown(page) == expected


def test_live_chat_and_history_after_reload(new_page, chat_server):
    ann, ben = new_page(), new_page()
    sign_up(ann, chat_server, "ann", "Ann Example")
    create_room(ann, "lobby", "Say hi")
    expect_connected(ann)

    sign_up(ben, chat_server, "ben", "Ben Example")
    join_from_directory(ben, "lobby", "1 member")
    expect_connected(ben)
    expect(ben.locator("#member-list .member")).to_have_count(2)

    send(ann, "Hello Ben!")
    expect_messages(ben, [(1, "Ann Example", "Hello Ben!")])

    tricky = 'Hi Ann 👋🏽 <b>html</b> & "quotes" <script>alert(1)</script>'
    send(ben, tricky)
    expect_messages(ann, [(1, "Ann Example", "Hello Ben!"), (2, "Ben Example", tricky)])
    assert ann.locator("#messages .message-body b, #messages .message-body script").count() == 0

    # Shift+Enter adds a line; Enter sends.
    box = ann.locator("#message-body")
    box.press_sequentially("line one")
    box.press("Shift+Enter")
    box.press_sequentially("line two")
    box.press("Enter")
    expected = [
        (1, "Ann Example", "Hello Ben!"),
        (2, "Ben Example", tricky),
        (3, "Ann Example", "line one\nline two"),
    ]
    expect_messages(ben, expected)
    expect_messages(ann, expected)
    expect(box).to_have_value("")

    for page in (ann, ben):
        page.reload()
        expect_connected(page)
        expect_messages(page, expected)
        assert page.locator("#messages .message-body b").count() == 0
        assert page.script_errors == []

    screenshots = os.environ.get("CHAT_SCREENSHOT_DIR")
    if screenshots:
        Path(screenshots).mkdir(parents=True, exist_ok=True)
        ann.screenshot(path=str(Path(screenshots) / "room.png"))

    # The server's verdict on a send shows next to the send box, and the
    # text comes back so it can be shortened.
    too_long = "x" * 4001
    send(ben, too_long)
    expect(ben.locator("#send-error")).to_have_text("The message body has 4001 characters; the maximum is 4000.")
    expect(ben.locator("#message-body")).to_have_value(too_long)
    expect(ben.locator("#messages > .message")).to_have_count(3)

    # Removed by the owner, Ben's open page shows a notice and disables the send box.
    ann.locator(".member[data-username='ben'] button.remove-member").click()
    expect(ann.locator(".member[data-username='ben']")).to_have_count(0)
    expect(ben.locator("#left-banner")).to_have_text("You are no longer a member of this room.")
    expect(ben.locator("#message-body")).to_be_disabled()
    expect(ben.locator("#send-button")).to_be_disabled()


def test_sends_during_outage_arrive_once(new_page, chat_server):
    cat, dan = new_page(), new_page()
    sign_up(cat, chat_server, "cat", "Cat")
    create_room(cat, "ops")
    sign_up(dan, chat_server, "dan", "Dan")
    join_from_directory(dan, "ops", "1 member")
    expect_connected(cat)
    expect_connected(dan)

    send(dan, "one")
    expect_messages(cat, [(1, "Dan", "one")])

    # A crash: no close frame, no shutdown code. Dan keeps typing.
    chat_server.stop(signal.SIGKILL)
    for page in (cat, dan):
        expect(page.locator("#connection-status")).to_have_attribute("data-state", "reconnecting")
        expect(page.locator("#connection-status")).to_have_text("Reconnecting…")
    send(dan, "two")
    send(dan, "three")
    expect(dan.locator("#messages > .message.pending")).to_have_count(2)

    chat_server.start()
    expect_connected(dan, RECONNECT_TIMEOUT)
    expect_connected(cat, RECONNECT_TIMEOUT)
    send(dan, "four")
    expected = [(1, "Dan", "one"), (2, "Dan", "two"), (3, "Dan", "three"), (4, "Dan", "four")]
    expect_messages(dan, expected)
    expect_messages(cat, expected)

    # Offline in the browser: the page gives up its socket, keeps the send
    # pending and delivers it on a new socket once back online.
    dan.context.set_offline(True)
    expect(dan.locator("#connection-status")).to_have_attribute("data-state", "reconnecting")
    send(dan, "five")
    expect(dan.locator("#messages > .message.pending")).to_have_count(1)
    dan.context.set_offline(False)
    expected.append((5, "Dan", "five"))
    expect_messages(cat, expected, RECONNECT_TIMEOUT)
    expect_messages(dan, expected, RECONNECT_TIMEOUT)

    cat.reload()
    expect_messages(cat, expected)


def test_sync_fetches_missed_broadcast(new_page, chat_server):
    eve, fay = new_page(), new_page()
    sign_up(eve, chat_server, "eve", "Eve")
    create_room(eve, "gaps")
    sign_up(fay, chat_server, "fay", "Fay")

    # Fay's socket silently loses the broadcast of one message, as the
    # channel layer may when a queue is full.
    lost = []

    def lose_one_broadcast(route):
        server = route.connect_to_server()

        def to_page(message):
            frame = json.loads(message)
            if frame["type"] == "message.new" and frame["message"]["body"] == "lost in transit" and not lost:
                lost.append(frame)
                return
            route.send(message)

        server.on_message(to_page)

    fay.route_web_socket(re.compile(r"/ws/$"), lose_one_broadcast)
    join_from_directory(fay, "gaps", "1 member")
    expect_connected(fay)

    send(eve, "first")
    expect_messages(fay, [(1, "Eve", "first")])
    send(eve, "lost in transit")
    expect_messages(eve, [(1, "Eve", "first"), (2, "Eve", "lost in transit")])
    assert len(lost) == 1
    # Nothing shows the loss until the next message reveals the gap.
    expect_messages(fay, [(1, "Eve", "first")])
    send(eve, "third")
    expect_messages(fay, [(1, "Eve", "first"), (2, "Eve", "lost in transit"), (3, "Eve", "third")])
