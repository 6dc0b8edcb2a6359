"""The withdrawal hook: the single, explicit way licensing tells generation that consent was withdrawn.

The generation app registers exactly one receiver in its AppConfig.ready():

    from licensing.hooks import register_withdrawal_receiver
    register_withdrawal_receiver(retire_adapters_holding)   # def retire_adapters_holding(work_ids, event_ids): ...

`licensing.services.works_withdraw` (used by opt-out, work deletion and an artist leaving) calls it as
`receiver(work_ids, event_ids)` -- two lists of ints, the withdrawn works and their new ConsentEvent ids --
once per withdrawal, inside the same database transaction that recorded the events, before the request
returns. If the receiver raises, the transaction rolls back and the withdrawal is not recorded either.
"""

import logging
from contextlib import contextmanager

from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

_receiver = None


def register_withdrawal_receiver(func):
    """Register the one receiver; registering the same function again is a no-op, a second one raises."""
    global _receiver
    if _receiver is not None and _receiver is not func:
        raise ImproperlyConfigured(
            f"A withdrawal receiver is already registered ({_receiver.__module__}.{_receiver.__qualname__}); "
            "licensing allows exactly one."
        )
    _receiver = func
    return func


def unregister_withdrawal_receiver(func):
    global _receiver
    if _receiver is func:
        _receiver = None


def withdrawal_receiver():
    return _receiver


@contextmanager
def replaced_withdrawal_receiver(func):
    """For tests: use `func` as the receiver inside the block, then restore whatever was registered."""
    global _receiver
    previous, _receiver = _receiver, func
    try:
        yield func
    finally:
        _receiver = previous


def notify_withdrawal(work_ids, event_ids):
    if _receiver is None:
        logger.info("Consent withdrawn for works %s; no withdrawal receiver is registered yet.", work_ids)
        return
    _receiver(list(work_ids), list(event_ids))
