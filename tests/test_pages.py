"""The server-rendered pages and their form POSTs, through Django's test client.

Personas (tests/conftest.py): alice owns the public room `general`, bob is
a member of it, carol is the outsider. Each test checks the status, what
the page shows and what was (or was not) written.
"""

import json
import re
import uuid
from contextlib import ExitStack

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connections
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from pytest_django.asserts import assertContains, assertNotContains, assertRedirects

from messaging.actions import send_message
from messaging.models import MAX_BODY_LENGTH
from messaging.queries import RECENT_PAGE_SIZE, messages_after
from messaging.sharding import shard_for_room
from rooms.actions import add_member, create_room
from rooms.models import Membership, Room

pytestmark = [pytest.mark.django_db(databases="__all__"), pytest.mark.usefixtures("fast_password_hasher")]

LOGIN_URL = "/accounts/login/"


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def stored(room) -> list[dict]:
    return messages_after(room.pk, 0, 200)[0]


def seqs_on(response) -> list[int]:
    return [int(seq) for seq in re.findall(r'data-seq="(\d+)"', response.content.decode())]


def flash(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def room_config(response) -> dict:
    match = re.search(r'<script id="room-config" type="application/json">(.*?)</script>', response.content.decode())
    assert match, "the page has no room-config"
    return json.loads(match.group(1))


def member_ids(room) -> set[int]:
    return set(Membership.objects.filter(room=room).values_list("user_id", flat=True))


@pytest.fixture
def private_room(alice, bob):
    room = create_room(alice, "secret-plans", Room.Kind.PRIVATE, "Hush")
    add_member(alice, room.pk, "bob")
    return room


# Logging in is required


@pytest.mark.parametrize(
    "url",
    ["/", "/rooms/directory/", "/rooms/new/", "/rooms/1/", "/rooms/1/?before=3"],
)
def test_it_sends_anonymous_visitors_to_log_in(client, url):
    response = client.get(url)
    assertRedirects(response, f"{LOGIN_URL}?next={url.replace('?', '%3F').replace('=', '%3D')}", fetch_redirect_response=False)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("rooms:send", {"room_id": 1}),
        ("rooms:join", {"room_id": 1}),
        ("rooms:leave", {"room_id": 1}),
        ("rooms:add_member", {"room_id": 1}),
        ("rooms:remove_member", {"room_id": 1, "user_id": 1}),
        ("rooms:open_direct", {}),
    ],
)
def test_it_sends_anonymous_posts_to_log_in(client, alice, bob, general, name, kwargs):
    response = client.post(reverse(name, kwargs=kwargs), {"body": "hi", "client_id": "c1", "username": "bob"})
    assert response.status_code == 302
    assert response["Location"].startswith(LOGIN_URL)
    assert stored(general) == []
    assert member_ids(general) == {alice.pk, bob.pk}


# Sign-up, log in, log out


def test_it_shows_the_signup_form(client):
    response = client.get(reverse("signup"))
    assert response.status_code == 200
    for field in ("username", "display_name", "password1", "password2"):
        assertContains(response, f'name="{field}"')


def test_it_signs_up_logs_in_and_lands_on_my_rooms(client):
    response = client.post(
        reverse("signup"),
        {"username": "dora", "display_name": "  Dora   Explorer ", "password1": "a-long-pass-phrase", "password2": "a-long-pass-phrase"},
    )
    assertRedirects(response, "/")
    user = get_user_model().objects.get(username="dora")
    assert user.display_name == "Dora Explorer"
    assert user.check_password("a-long-pass-phrase")
    page = client.get("/")
    assertContains(page, '<span id="current-user" title="@dora">Dora Explorer</span>', html=False)


@pytest.mark.parametrize(
    "password1, password2, error",
    [
        ("a-long-pass-phrase", "another-pass-phrase", "The two password fields didn’t match."),
        ("password", "password", "This password is too common."),
        ("12345678901", "12345678901", "This password is entirely numeric."),
        ("short", "short", "This password is too short."),
    ],
)
def test_it_rejects_bad_passwords_at_signup(client, password1, password2, error):
    response = client.post(
        reverse("signup"), {"username": "dora", "display_name": "Dora", "password1": password1, "password2": password2}
    )
    assert response.status_code == 200
    assertContains(response, error)
    assert not get_user_model().objects.filter(username="dora").exists()


def test_it_rejects_a_taken_username_in_any_case(client, alice):
    response = client.post(
        reverse("signup"),
        {"username": "ALICE", "display_name": "Other", "password1": "a-long-pass-phrase", "password2": "a-long-pass-phrase"},
    )
    assert response.status_code == 200
    assertContains(response, "A user with that username already exists.")
    assert get_user_model().objects.count() == 1


def test_it_requires_a_display_name_at_signup(client):
    response = client.post(
        reverse("signup"),
        {"username": "dora", "display_name": "", "password1": "a-long-pass-phrase", "password2": "a-long-pass-phrase"},
    )
    assert response.status_code == 200
    assertContains(response, "This field is required.")
    assert not get_user_model().objects.exists()


def test_it_sends_a_signed_in_user_from_signup_and_login_to_my_rooms(alice):
    client = client_for(alice)
    assertRedirects(client.get(reverse("signup")), "/")
    assertRedirects(client.get(reverse("login")), "/")


def test_it_logs_in_and_out(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": "pw-alicealicealice"})
    assertRedirects(response, "/")
    assert client.get("/").status_code == 200
    confirm = client.get(reverse("logout"))
    assert confirm.status_code == 200
    assertContains(confirm, 'id="logout-confirm-form"')
    assert client.get("/").status_code == 200  # a GET does not log out
    assertRedirects(client.post(reverse("logout")), LOGIN_URL, fetch_redirect_response=False)
    assert client.get("/").status_code == 302


def test_it_rejects_a_wrong_password(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assertContains(response, "Please enter a correct username and password.")
    assert "_auth_user_id" not in client.session


# CSRF


@pytest.mark.parametrize(
    "path, data",
    [
        ("/rooms/new/", {"name": "forged", "kind": "public"}),
        ("/accounts/logout/", {}),
    ],
)
def test_it_rejects_posts_without_a_csrf_token(alice, general, path, data):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(path, data)
    assert response.status_code == 403
    assert not Room.objects.filter(name="forged").exists()
    assert client.get("/").status_code == 200  # still logged in


def test_it_rejects_a_send_without_a_csrf_token(bob, general):
    client = Client(enforce_csrf_checks=True)
    client.force_login(bob)
    response = client.post(f"/rooms/{general.pk}/messages/", {"body": "forged", "client_id": "c1"})
    assert response.status_code == 403
    assert stored(general) == []


def test_it_accepts_a_post_with_the_csrf_token_of_the_page(bob, general):
    client = Client(enforce_csrf_checks=True)
    client.force_login(bob)
    page = client.get(f"/rooms/{general.pk}/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    response = client.post(
        f"/rooms/{general.pk}/messages/", {"body": "real", "client_id": "c1", "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302
    assert [message["body"] for message in stored(general)] == ["real"]


# My rooms


def test_it_lists_my_rooms_with_kind_topic_and_role(alice, general, private_room):
    response = client_for(alice).get("/")
    assert response.status_code == 200
    content = response.content.decode()
    assert f'href="/rooms/{general.pk}/">general</a>' in content
    assert f'href="/rooms/{private_room.pk}/">secret-plans</a>' in content
    assertContains(response, "Everything")
    assertContains(response, '<span class="badge kind-private">Private</span>', html=True)
    assertContains(response, '<span class="badge role-owner">Owner</span>', count=2, html=True)
    assertContains(response, 'href="/rooms/directory/"')
    assertContains(response, 'href="/rooms/new/"')
    assertContains(response, 'action="/rooms/direct/"')


def test_it_tells_an_outsider_they_have_no_rooms(carol, general):
    response = client_for(carol).get("/")
    assertContains(response, 'id="no-rooms"')
    assertNotContains(response, "general")


def test_it_opens_a_direct_conversation_once(alice, bob):
    client = client_for(alice)
    response = client.post("/rooms/direct/", {"username": "bob"})
    room = Room.objects.get(kind=Room.Kind.DIRECT)
    assertRedirects(response, f"/rooms/{room.pk}/")
    assert member_ids(room) == {alice.pk, bob.pk}
    assertRedirects(client.post("/rooms/direct/", {"username": "bob"}), f"/rooms/{room.pk}/")
    assert Room.objects.filter(kind=Room.Kind.DIRECT).count() == 1
    # Each side sees the other person's name, not the room's internal name.
    assertContains(client.get("/"), f'href="/rooms/{room.pk}/">Bob</a>')
    assertContains(client_for(bob).get("/"), f'href="/rooms/{room.pk}/">Alice</a>')
    page = client.get(f"/rooms/{room.pk}/")
    assertContains(page, '<h1 id="room-title">Bob</h1>', html=True)
    assertNotContains(page, 'id="leave-form"')
    assertNotContains(page, 'id="add-member-form"')


@pytest.mark.parametrize(
    "username, error",
    [("nobody", "No active user is named “nobody”."), ("alice", "You cannot open a direct conversation with yourself.")],
)
def test_it_explains_why_a_direct_conversation_cannot_open(alice, username, error):
    client = client_for(alice)
    response = client.post("/rooms/direct/", {"username": username}, follow=True)
    assertRedirects(response, "/")
    assert flash(response) == [error]
    assert not Room.objects.filter(kind=Room.Kind.DIRECT).exists()


# Directory


def test_it_lists_public_rooms_with_member_counts_and_join_buttons(carol, general, private_room):
    response = client_for(carol).get("/rooms/directory/")
    assert response.status_code == 200
    assertContains(response, f'data-room-name="general"')
    assertContains(response, '<span class="member-count" data-count="2">2 members</span>', html=True)
    assertContains(response, f'action="/rooms/{general.pk}/join/"')
    assertNotContains(response, "secret-plans")


def test_it_offers_open_instead_of_join_to_members(bob, general):
    response = client_for(bob).get("/rooms/directory/")
    assertNotContains(response, f'action="/rooms/{general.pk}/join/"')
    assertContains(response, f'<a class="button small open-room" href="/rooms/{general.pk}/">Open</a>', html=True)


def test_it_joins_a_public_room(carol, general):
    client = client_for(carol)
    assertRedirects(client.post(f"/rooms/{general.pk}/join/"), f"/rooms/{general.pk}/")
    assert carol.pk in member_ids(general)
    assert Membership.objects.get(room=general, user=carol).role == Membership.Role.MEMBER
    assertNotContains(client.get("/rooms/directory/"), f'action="/rooms/{general.pk}/join/"')


def test_it_hides_private_and_missing_rooms_from_join(carol, private_room):
    client = client_for(carol)
    assert client.post(f"/rooms/{private_room.pk}/join/").status_code == 404
    assert client.post("/rooms/999999/join/").status_code == 404
    assert carol.pk not in member_ids(private_room)


def test_it_only_joins_by_post(carol, general):
    assert client_for(carol).get(f"/rooms/{general.pk}/join/").status_code == 405
    assert carol.pk not in member_ids(general)


# Creating a room


def test_it_creates_a_room_with_its_creator_as_owner(bob):
    client = client_for(bob)
    assert client.get("/rooms/new/").status_code == 200
    response = client.post("/rooms/new/", {"name": "  book   club ", "kind": "private", "topic": "Novels"})
    room = Room.objects.get(name="book club")
    assertRedirects(response, f"/rooms/{room.pk}/")
    assert (room.kind, room.topic) == (Room.Kind.PRIVATE, "Novels")
    assert Membership.objects.get(room=room, user=bob).role == Membership.Role.OWNER


def test_it_rejects_a_duplicate_room_name_in_any_case(bob, general):
    response = client_for(bob).post("/rooms/new/", {"name": "GENERAL", "kind": "public", "topic": ""})
    assert response.status_code == 200
    assertContains(response, "A room named “GENERAL” already exists.")
    assert response.context["form"].errors == {"name": ["A room named “GENERAL” already exists."]}
    assert Room.objects.count() == 1


@pytest.mark.parametrize(
    "data, field",
    [
        ({"name": "", "kind": "public"}, "name"),
        ({"name": "x", "kind": "direct"}, "kind"),
        ({"name": "x" * 81, "kind": "public"}, "name"),
        ({"name": "x", "kind": "public", "topic": "t" * 251}, "topic"),
    ],
)
def test_it_rejects_invalid_room_input(bob, data, field):
    response = client_for(bob).post("/rooms/new/", data)
    assert response.status_code == 200
    assert field in response.context["form"].errors
    assert not Room.objects.exists()


# The room page


def test_it_shows_a_member_the_room(bob, general):
    send_message(bob, general.pk, "Hello there", "c1")
    response = client_for(bob).get(f"/rooms/{general.pk}/")
    assert response.status_code == 200
    assertContains(response, '<h1 id="room-title">general</h1>', html=True)
    assertContains(response, '<div class="message-body">Hello there</div>', html=True)
    assertContains(response, '<span class="message-author">Bob</span>', html=True)
    assertContains(response, 'id="send-form"')
    assertContains(response, f'action="/rooms/{general.pk}/messages/"')
    assertContains(response, 'id="leave-form"')
    assertContains(response, 'data-username="alice" data-role="owner"')
    assertContains(response, 'data-username="bob" data-role="member"')
    # A plain member manages nobody.
    assertNotContains(response, 'id="add-member-form"')
    assertNotContains(response, "remove-member")
    config = room_config(response)
    assert config["room"] == general.pk
    assert config["lastSeq"] == 1
    assert config["live"] is True
    assert config["wsPath"] == "/ws/"
    assert config["me"] == {"id": bob.pk, "displayName": "Bob"}
    client_id = re.search(r'name="client_id" id="client-id" value="([^"]+)"', response.content.decode()).group(1)
    assert uuid.UUID(client_id)


def test_it_gives_every_render_a_fresh_client_id(bob, general):
    client = client_for(bob)
    ids = {
        re.search(r'id="client-id" value="([^"]+)"', client.get(f"/rooms/{general.pk}/").content.decode()).group(1)
        for _ in range(2)
    }
    assert len(ids) == 2


def test_it_gives_owners_member_management(alice, bob, general):
    response = client_for(alice).get(f"/rooms/{general.pk}/")
    assertContains(response, 'id="add-member-form"')
    assertContains(response, f'action="/rooms/{general.pk}/members/{bob.pk}/remove/"')
    assertNotContains(response, f'action="/rooms/{general.pk}/members/{alice.pk}/remove/"')


def test_it_lets_an_admin_remove_members_but_not_owners(alice, bob, carol, general):
    add_member(alice, general.pk, "carol", role=Membership.Role.ADMIN)
    response = client_for(carol).get(f"/rooms/{general.pk}/")
    assertContains(response, f'action="/rooms/{general.pk}/members/{bob.pk}/remove/"')
    assertNotContains(response, f'action="/rooms/{general.pk}/members/{alice.pk}/remove/"')


def test_it_shows_the_newest_page_and_links_to_older_messages(bob, general):
    for number in range(1, RECENT_PAGE_SIZE + 6):
        send_message(bob, general.pk, f"message {number}", f"c{number}")
    client = client_for(bob)
    response = client.get(f"/rooms/{general.pk}/")
    assert seqs_on(response) == list(range(6, RECENT_PAGE_SIZE + 6))
    assertContains(response, '<a id="load-older" href="?before=6">', html=False)
    assert room_config(response)["lastSeq"] == RECENT_PAGE_SIZE + 5

    older = client.get(f"/rooms/{general.pk}/?before=6")
    assert seqs_on(older) == [1, 2, 3, 4, 5]
    assertNotContains(older, 'id="load-older"')
    # An older page is a plain archive: no live updates and no send box.
    assertContains(older, 'id="latest-link"')
    assertNotContains(older, 'id="send-form"')
    assertNotContains(older, 'id="room-config"')
    assertContains(older, 'data-live="false"')


@pytest.mark.parametrize("before", ["abc", "-3", "0", ""])
def test_it_treats_a_bad_before_as_the_newest_page(bob, general, before):
    send_message(bob, general.pk, "one", "c1")
    response = client_for(bob).get(f"/rooms/{general.pk}/?before={before}")
    assert response.status_code == 200
    assert seqs_on(response) == [1]
    assertContains(response, 'id="send-form"')


def test_it_reads_the_room_page_in_a_fixed_number_of_queries(alice, bob, carol, general):
    add_member(alice, general.pk, "carol")
    for number in range(30):
        author = (alice, bob, carol)[number % 3]
        send_message(author, general.pk, f"m{number}", f"c{number}")
    client = client_for(bob)
    client.get(f"/rooms/{general.pk}/")  # loads the shard bucket map, cached for a while
    with ExitStack() as stack:
        captured = {alias: stack.enter_context(CaptureQueriesContext(connections[alias])) for alias in connections}
        response = client.get(f"/rooms/{general.pk}/")
    assert len(seqs_on(response)) == 30
    counts = {alias: len(queries) for alias, queries in captured.items() if len(queries)}
    # Main: session (unless the cached_db engine serves it from the cache),
    # user, room, membership, member count, members. Shard: the room's
    # last_seq, the key of the cached recent page that the first load
    # stored (messages and authors). None grows with messages or authors.
    session_queries = 0 if settings.SESSION_ENGINE in ("chatproject.sessions", "django.contrib.sessions.backends.cached_db") else 1
    assert counts == {"default": 5 + session_queries, shard_for_room(general.pk): 1}, counts


def test_it_escapes_html_in_message_bodies(bob, general):
    send_message(bob, general.pk, '<script>alert("x")</script><b>bold</b>', "c1")
    response = client_for(bob).get(f"/rooms/{general.pk}/")
    content = response.content.decode()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in content
    assert "<script>alert" not in content
    assert "<b>bold</b>" not in content


def test_it_escapes_html_in_room_names_and_topics(alice):
    room = create_room(alice, "<i>room</i>", Room.Kind.PUBLIC, "<img src=x onerror=alert(1)>")
    client = client_for(alice)
    for path in ("/", "/rooms/directory/", f"/rooms/{room.pk}/"):
        content = client.get(path).content.decode()
        assert "&lt;i&gt;room&lt;/i&gt;" in content
        assert "<i>room</i>" not in content
        assert "<img src=x" not in content


def test_it_shows_an_outsider_a_preview_of_a_public_room(bob, carol, general):
    send_message(bob, general.pk, "visible to all", "c1")
    response = client_for(carol).get(f"/rooms/{general.pk}/")
    assert response.status_code == 200
    assertContains(response, "visible to all")
    assertContains(response, 'id="join-button"')
    assertContains(response, f'action="/rooms/{general.pk}/join/"')
    assertContains(response, "You are looking at a public room with 2 members.")
    assertNotContains(response, 'id="send-form"')
    assertNotContains(response, 'id="room-config"')
    assertNotContains(response, 'id="leave-form"')
    assertNotContains(response, 'id="member-list"')


def test_it_hides_a_private_room_from_an_outsider(carol, private_room):
    assert client_for(carol).get(f"/rooms/{private_room.pk}/").status_code == 404


def test_it_answers_404_for_a_missing_room(carol):
    response = client_for(carol).get("/rooms/424242/")
    assert response.status_code == 404
    assertContains(response, "There is nothing here, or you cannot see it.", status_code=404)


def test_it_shows_a_private_room_to_its_members(bob, private_room):
    response = client_for(bob).get(f"/rooms/{private_room.pk}/")
    assert response.status_code == 200
    assertContains(response, '<span class="badge kind-private">Private</span>', html=True)


# Sending without JavaScript


def test_it_sends_a_message_from_the_plain_form(bob, general):
    client = client_for(bob)
    response = client.post(f"/rooms/{general.pk}/messages/", {"body": "no script here", "client_id": "c-1"})
    assertRedirects(response, f"/rooms/{general.pk}/#send-form", fetch_redirect_response=False)
    messages = stored(general)
    assert [(m["seq"], m["body"], m["author"]["id"], m["client_id"]) for m in messages] == [
        (1, "no script here", bob.pk, "c-1")
    ]
    assertContains(client.get(f"/rooms/{general.pk}/"), '<div class="message-body">no script here</div>', html=True)


def test_it_stores_a_double_submitted_form_once(bob, general):
    client = client_for(bob)
    for _ in range(2):
        response = client.post(f"/rooms/{general.pk}/messages/", {"body": "only once", "client_id": "same-id"})
        assert response.status_code == 302
    assert [m["body"] for m in stored(general)] == ["only once"]


def test_it_reports_a_reused_client_id_with_another_body(bob, general):
    client = client_for(bob)
    client.post(f"/rooms/{general.pk}/messages/", {"body": "first", "client_id": "same-id"})
    response = client.post(f"/rooms/{general.pk}/messages/", {"body": "second", "client_id": "same-id"})
    assert response.status_code == 200
    assertContains(response, "This client_id was already used for a different message.")
    assert [m["body"] for m in stored(general)] == ["first"]
    # The page offers a new client_id, so sending again stores the message.
    new_id = re.search(r'id="client-id" value="([^"]+)"', response.content.decode()).group(1)
    assert new_id != "same-id"


@pytest.mark.parametrize(
    "body, error",
    [
        ("", "The message body is empty."),
        ("  \n\t ", "The message body is empty."),
        ("x" * (MAX_BODY_LENGTH + 1), f"The message body has {MAX_BODY_LENGTH + 1} characters; the maximum is {MAX_BODY_LENGTH}."),
    ],
)
def test_it_shows_why_a_message_was_not_sent(bob, general, body, error):
    client = client_for(bob)
    response = client.post(f"/rooms/{general.pk}/messages/", {"body": body, "client_id": "c-1"})
    assert response.status_code == 200
    assertContains(response, f'<p id="send-error" class="send-error" role="alert">{error}</p>', html=True)
    assert stored(general) == []
    # The text comes back in the box so it can be fixed.
    if body.strip():
        assertContains(response, f">{body}</textarea>")


def test_it_rejects_a_message_with_a_nul_character(bob, general):
    response = client_for(bob).post(f"/rooms/{general.pk}/messages/", {"body": "a\x00b", "client_id": "c-1"})
    assert response.status_code == 200
    assertContains(response, "Null characters are not allowed.")
    assert stored(general) == []


def test_it_rejects_a_send_without_a_valid_client_id(bob, general):
    response = client_for(bob).post(f"/rooms/{general.pk}/messages/", {"body": "hi", "client_id": "no spaces"})
    assert response.status_code == 200
    assertContains(response, "client_id must be 1 to 64 letters")
    assert stored(general) == []


def test_it_forbids_an_outsider_to_send_to_a_public_room(carol, general):
    response = client_for(carol).post(f"/rooms/{general.pk}/messages/", {"body": "hi", "client_id": "c-1"})
    assert response.status_code == 403
    assertContains(response, "You are not a member of this room.", status_code=403)
    assert stored(general) == []


def test_it_hides_a_private_room_from_an_outsider_who_sends(carol, private_room):
    response = client_for(carol).post(f"/rooms/{private_room.pk}/messages/", {"body": "hi", "client_id": "c-1"})
    assert response.status_code == 404
    assert stored(private_room) == []


def test_it_only_sends_by_post(bob, general):
    assert client_for(bob).get(f"/rooms/{general.pk}/messages/").status_code == 405


# Leaving


def test_it_lets_a_member_leave(bob, general):
    client = client_for(bob)
    response = client.post(f"/rooms/{general.pk}/leave/", follow=True)
    assertRedirects(response, "/")
    assert flash(response) == ["You left general."]
    assert bob.pk not in member_ids(general)


def test_it_hands_ownership_on_when_the_owner_leaves(alice, bob, general):
    client_for(alice).post(f"/rooms/{general.pk}/leave/")
    assert Membership.objects.get(room=general, user=bob).role == Membership.Role.OWNER


def test_it_forbids_leaving_a_direct_conversation(alice, bob):
    client = client_for(alice)
    client.post("/rooms/direct/", {"username": "bob"})
    room = Room.objects.get(kind=Room.Kind.DIRECT)
    response = client.post(f"/rooms/{room.pk}/leave/")
    assert response.status_code == 403
    assertContains(response, "You cannot leave a direct conversation.", status_code=403)
    assert member_ids(room) == {alice.pk, bob.pk}


def test_it_hides_a_private_room_from_an_outsider_who_leaves(carol, private_room):
    assert client_for(carol).post(f"/rooms/{private_room.pk}/leave/").status_code == 404


# Adding and removing members


def test_it_lets_an_owner_add_a_member(alice, carol, private_room):
    response = client_for(alice).post(f"/rooms/{private_room.pk}/members/", {"username": "carol"}, follow=True)
    assertRedirects(response, f"/rooms/{private_room.pk}/")
    assert flash(response) == ["Carol is a member of this room."]
    assert carol.pk in member_ids(private_room)
    assert client_for(carol).get(f"/rooms/{private_room.pk}/").status_code == 200


def test_it_explains_an_unknown_username(alice, general):
    response = client_for(alice).post(f"/rooms/{general.pk}/members/", {"username": "nobody"}, follow=True)
    assertRedirects(response, f"/rooms/{general.pk}/")
    assert flash(response) == ["No active user is named “nobody”."]


def test_it_asks_for_a_username_to_add(alice, general):
    response = client_for(alice).post(f"/rooms/{general.pk}/members/", {"username": ""}, follow=True)
    assert flash(response) == ["Type the username of the person to add."]


def test_it_forbids_a_plain_member_to_add_people(bob, carol, private_room):
    response = client_for(bob).post(f"/rooms/{private_room.pk}/members/", {"username": "carol"})
    assert response.status_code == 403
    assertContains(response, "Only the room&#x27;s owners and admins can manage its members.", status_code=403)
    assert carol.pk not in member_ids(private_room)


def test_it_lets_an_owner_remove_a_member(alice, bob, general):
    response = client_for(alice).post(f"/rooms/{general.pk}/members/{bob.pk}/remove/")
    assertRedirects(response, f"/rooms/{general.pk}/", fetch_redirect_response=False)
    assert member_ids(general) == {alice.pk}


def test_it_forbids_a_plain_member_to_remove_anyone(alice, bob, general):
    response = client_for(bob).post(f"/rooms/{general.pk}/members/{alice.pk}/remove/")
    assert response.status_code == 403
    assert member_ids(general) == {alice.pk, bob.pk}


def test_it_forbids_an_admin_to_remove_an_owner(alice, bob, carol, general):
    add_member(alice, general.pk, "carol", role=Membership.Role.ADMIN)
    response = client_for(carol).post(f"/rooms/{general.pk}/members/{alice.pk}/remove/")
    assert response.status_code == 403
    assertContains(response, "Only an owner can remove an owner or an admin.", status_code=403)
    assert alice.pk in member_ids(general)


def test_it_forbids_an_outsider_to_remove_members(bob, carol, general):
    assert client_for(carol).post(f"/rooms/{general.pk}/members/{bob.pk}/remove/").status_code == 403
    assert bob.pk in member_ids(general)


def test_it_tells_an_owner_to_leave_instead_of_removing_themselves(alice, general):
    response = client_for(alice).post(f"/rooms/{general.pk}/members/{alice.pk}/remove/", follow=True)
    assert flash(response) == ["Use leave to remove yourself from a room."]
    assert alice.pk in member_ids(general)


def test_it_reports_leaving_a_room_you_are_not_in(carol, general):
    client = client_for(carol)
    response = client.post(f"/rooms/{general.pk}/leave/", follow=True)
    assertContains(response, "You are not a member of general.")
    assertNotContains(response, "You left")
