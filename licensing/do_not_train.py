"""Do-not-train signals embedded in an image: C2PA/CAWG training-mining assertions and XMP PLUS DataMining."""

import io
import json
import logging
import re
from typing import NamedTuple

from django.utils.translation import gettext_noop

logger = logging.getLogger(__name__)

TRAINING_MINING_LABELS = ("cawg.training-mining", "c2pa.training-mining")
TRAINING_KEYS = ("cawg.ai_training", "cawg.ai_generative_training", "c2pa.ai_training", "c2pa.ai_generative_training")
REFUSING_USES = {"notAllowed", "constrained"}

XMP_PACKET = re.compile(rb"<x:xmpmeta[\s\S]*?</x:xmpmeta>")
# plus:DataMining as an attribute, an element or an rdf:resource; any DMI-PROHIBITED* value forbids AI training
# (DMI-PROHIBITED, -AIMLTRAINING, -GENAIMLTRAINING, -EXCEPTSEARCHENGINEINDEXING, -SEECONSTRAINT).
XMP_DATA_MINING = re.compile(r"DataMining[\s\S]{0,400}?(DMI-[A-Z-]+)")
VALUE_MAX_CHARS = 80  # a value quoted from the file, which its maker chose


class Signal(NamedTuple):
    """Why a file forbids AI training: a sentence of the catalogue's English and its values, stored apart and
    translated when shown (illustration_platform.reasons). NO_SIGNAL, falsy, when it does not."""

    reason: str
    params: dict

    def __bool__(self):  # a tuple of two is always true
        return bool(self.reason)


NO_SIGNAL = Signal("", {})


def _signal(reason, **params):
    return Signal(reason, {name: str(value)[:VALUE_MAX_CHARS] for name, value in params.items()})


def c2pa_signal(data, mime):
    """The Signal of a C2PA manifest that forbids AI training, or NO_SIGNAL (a file without a manifest is normal)."""
    try:
        import c2pa

        reader = c2pa.Reader.try_create(mime, io.BytesIO(data))
        if reader is None:
            return NO_SIGNAL
        with reader:
            store = json.loads(reader.json())
    except Exception as error:  # an unreadable manifest is reported as no signal, not as a bad image
        logger.info("Could not read C2PA manifest: %s", error)
        return NO_SIGNAL
    for manifest in (store.get("manifests") or {}).values():
        for assertion in manifest.get("assertions") or []:
            label = str(assertion.get("label", ""))
            if not label.startswith(TRAINING_MINING_LABELS):
                continue
            entries = (assertion.get("data") or {}).get("entries") or {}
            for key in TRAINING_KEYS:
                use = (entries.get(key) or {}).get("use")
                if use in REFUSING_USES:
                    return _signal(gettext_noop("Its Content Credentials say AI training is %(use)s (%(label)s: "
                                                "%(key)s)."), use=use, label=label, key=key)
    return NO_SIGNAL


def xmp_signal(data, image=None):
    """The Signal of an XMP plus:DataMining field that forbids AI training, or NO_SIGNAL."""
    packets = [match.group(0) for match in XMP_PACKET.finditer(data)]
    if image is not None:
        for key in ("xmp", "XML:com.adobe.xmp"):
            value = image.info.get(key)
            if value:
                packets.append(value if isinstance(value, bytes) else str(value).encode("utf-8", "replace"))
    for packet in packets:
        text = packet.decode("utf-8", "replace")
        for match in XMP_DATA_MINING.finditer(text):
            value = match.group(1)
            if value.startswith("DMI-PROHIBITED"):
                return _signal(gettext_noop("Its XMP metadata says data mining is prohibited (plus:DataMining "
                                            "%(value)s)."), value=value)
    return NO_SIGNAL


def do_not_train_signal(data, mime, image=None):
    return c2pa_signal(data, mime) or xmp_signal(data, image)
