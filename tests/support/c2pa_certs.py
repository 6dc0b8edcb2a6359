"""A throw-away CA and C2PA signer for tests, and a helper to sign images with c2pa-python.

c2pa accepts an end-entity certificate signed by a CA with: BasicConstraints CA:FALSE, KeyUsage
digitalSignature (critical), ExtendedKeyUsage emailProtection + documentSigning, SubjectKeyIdentifier and
AuthorityKeyIdentifier (see ../shared/NOTES.md). Reusable by any app that signs or reads Content Credentials.
"""

import datetime
import io
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")


@dataclass(frozen=True)
class SigningMaterial:
    root_pem: bytes
    chain_pem: bytes  # end-entity certificate followed by the root
    key_pem: bytes


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test")])


@lru_cache(maxsize=1)
def make_signing_material():
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    root = (
        x509.CertificateBuilder()
        .subject_name(_name("Test C2PA root"))
        .issuer_name(_name("Test C2PA root"))
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
                          key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(root_ski, critical=False)
        .sign(root_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("Test C2PA signer"))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                          key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION, DOCUMENT_SIGNING]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    root_pem = root.public_bytes(pem)
    return SigningMaterial(
        root_pem=root_pem,
        chain_pem=leaf.public_bytes(pem) + root_pem,
        key_pem=key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


def sign_image(data, mime, assertions, title="test image"):
    """Return `data` (PNG/JPEG bytes) with a signed C2PA manifest holding `assertions` (list of {label, data})."""
    import c2pa

    material = make_signing_material()
    signer = c2pa.Signer.from_info(
        c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, material.chain_pem, material.key_pem, None)
    )
    manifest = {
        "claim_generator_info": [{"name": "tests", "version": "1"}],
        "title": title,
        "format": mime,
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [{
                "action": "c2pa.created",
                "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCreation",
            }]}},
            *assertions,
        ],
    }
    source, destination = io.BytesIO(data), io.BytesIO()
    with signer, c2pa.Builder(manifest) as builder:
        builder.sign(signer, mime, source, destination)
    return destination.getvalue()


def training_mining(label="cawg.training-mining", **uses):
    """A training-mining assertion; `uses` maps entry names (ai_training=...) to allowed/notAllowed/constrained."""
    prefix = label.split(".")[0]
    return {"label": label, "data": {"entries": {f"{prefix}.{name}": {"use": use} for name, use in uses.items()}}}
