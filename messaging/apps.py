from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MessagingConfig(AppConfig):
    name = "messaging"
    verbose_name = _("Messaging")

    def ready(self):
        from django.core.signals import request_finished

        from chatproject.connections import close_request_connections

        request_finished.connect(close_request_connections, dispatch_uid="chatproject.connections.close_request")
