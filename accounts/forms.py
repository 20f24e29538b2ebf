from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm
from django.utils.translation import gettext_lazy as _


class SignUpForm(UserCreationForm):
    """Username, display name and a password typed twice.

    UserCreationForm runs AUTH_PASSWORD_VALIDATORS on the new user and
    rejects a username that differs from an existing one only in case.
    """

    display_name = forms.CharField(
        label=_("Display name"),
        max_length=80,
        help_text=_("The name other people see next to your messages."),
    )

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "display_name")

    def clean_display_name(self):
        # Collapse runs of blanks so "  Ann   Lee " and "Ann Lee" look the same.
        return " ".join(self.cleaned_data["display_name"].split())
