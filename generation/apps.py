from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class GenerationConfig(AppConfig):
    name = "generation"
    verbose_name = _("Generation")

    def ready(self):
        from licensing.hooks import register_withdrawal_receiver

        from . import tasks  # noqa: F401  (connects the worker_ready recovery)
        from .services import withdrawal_receiver

        register_withdrawal_receiver(withdrawal_receiver)
