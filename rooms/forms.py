"""Forms of the room pages.

They only shape the input; the rules (name length and uniqueness, who may
add or remove whom, body limits) live in rooms.actions and
messaging.actions, and the views turn the ChatError those raise into form
errors, so each rule is written once.
"""

import uuid

from django import forms
from django.utils.translation import gettext_lazy as _

from rooms.actions import CREATABLE_KINDS, MAX_ROOM_NAME_LENGTH, MAX_TOPIC_LENGTH
from rooms.models import Room


class CreateRoomForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=MAX_ROOM_NAME_LENGTH)
    kind = forms.ChoiceField(
        label=_("Who can join"),
        choices=[(kind.value, kind.label) for kind in CREATABLE_KINDS],
        initial=Room.Kind.PUBLIC,
        widget=forms.RadioSelect,
        help_text=_("Anyone can find and join a public room; members add people to a private one."),
    )
    topic = forms.CharField(label=_("Topic"), max_length=MAX_TOPIC_LENGTH, required=False)


class UsernameForm(forms.Form):
    """One username: open a direct conversation, or add a member."""

    username = forms.CharField(label=_("Username"), max_length=150)


class MessageForm(forms.Form):
    """The send box; it works without JavaScript as a plain form POST.

    client_id is made when the page renders, so submitting the same form
    twice (a double click, a resent POST) stores one message.
    """

    # Not required and not stripped: messaging.actions.validate_body
    # decides what an empty or too long body is, for every client alike.
    body = forms.CharField(label=_("Message"), required=False, strip=False, widget=forms.Textarea(attrs={"rows": 2}))
    client_id = forms.CharField(widget=forms.HiddenInput, required=False)

    @staticmethod
    def new_client_id() -> str:
        return str(uuid.uuid4())
