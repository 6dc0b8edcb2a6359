from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "illustration_platform.accounts"
    label = "accounts"
    verbose_name = "Accounts"
